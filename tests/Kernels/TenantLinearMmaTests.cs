using System.Reflection;
using BitDeltaNative.Kernels;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// The tensor-core decode form's plumbing that its audit case does not show: the row groups the host builds for it,
/// and what its PTX must hold to be the fast path (tensor-core products, 16-byte loads), compiled offline for SM_90.
/// Its sums are checked against the twin by the audit case "tenant linear mma" (KernelTests).
/// </summary>
public class TenantLinearMmaTests
{
    [Fact]
    public void Groups_sort_rows_by_tenant_and_list_each_groups_tenants_once()
    {
        int[] slots = [2, -1, 0, 2, 0, 1, 2, 2, 2, -1, 0];
        using var rows = new TenantRows(slots, Device.Cpu);
        Assert.Equal(2, rows.MmaGroupCount);
        var table = rows.MmaGroups!.Host<int>().ToArray();
        Assert.Equal(2 * TenantRows.MmaGroupInts, table.Length);
        var listed = new List<int>();
        for (int gr = 0; gr < 2; gr++)
        {
            var at = table.AsSpan(gr * TenantRows.MmaGroupInts, TenantRows.MmaGroupInts);
            var tenants = new HashSet<int>();
            for (int j = 0; j < 8; j++)
            {
                if (at[j] < 0) { Assert.Equal(-1, at[8 + j]); continue; }
                listed.Add(at[j]);
                Assert.Equal(slots[at[j]], at[8 + j]);
                if (at[8 + j] >= 0) tenants.Add(at[8 + j]);
            }
            var distinct = at.Slice(16, 8).ToArray().Where(u => u >= 0).ToArray();
            Assert.Equal(tenants.OrderBy(u => u), distinct.OrderBy(u => u));
            Assert.Equal(distinct.Length, distinct.Distinct().Count());
        }
        // Every row once, in slot order (stable): base rows first, then slot 0, 1, 2.
        Assert.Equal(Enumerable.Range(0, slots.Length).OrderBy(r => slots[r]), listed);
    }

    [Fact]
    public void Long_segments_leave_the_decode_groups()
    {
        var slots = Enumerable.Repeat(1, TenantLinear.PrefillMinRows).Append(0).Append(0).ToArray();
        using var rows = new TenantRows(slots, Device.Cpu);
        Assert.Equal(1, rows.MmaGroupCount);
        var table = rows.MmaGroups!.Host<int>().ToArray();
        Assert.Equal([TenantLinear.PrefillMinRows, TenantLinear.PrefillMinRows + 1, -1, -1, -1, -1, -1, -1], table[..8]);
        Assert.Equal([0, -1, -1, -1, -1, -1, -1, -1], table[16..24]);
    }

    [Fact]
    public void Kernel_ptx_has_tensor_core_products_and_16_byte_loads()
    {
        var ptx = Ptx.Compile(typeof(TenantLinear).GetMethod("MmaKernel", BindingFlags.Static | BindingFlags.NonPublic)!);
        // 8 base products per group, 8 per tenant with both halves of x (4 groups) … the inline PTX is there.
        Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", ptx);
        Assert.True(ptx.Split("mma.sync").Length - 1 >= 32, "fewer tensor-core products than the 4 groups' base terms");
        Assert.Contains("ld.global.v4.b32", ptx);
        Assert.Contains("cvt.rn.f16.f32", ptx);
    }
}
