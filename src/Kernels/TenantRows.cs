namespace BitDeltaNative.Kernels;

/// <summary>
/// Which tenant each row of a batch belongs to: per row a slot of the delta pool, or −1 for the base model
/// alone. Built once per forward step and shared by every multi-tenant linear of it (<see cref="TenantLinear"/>):
/// the host keeps the slots and their maximal runs (segments); the device tables the decode kernels read (the
/// CUDA-core form's slots and row list, the tensor-core form's row groups) are uploaded on first use, so a step
/// copies only the ones its linears take, and the managed CPU device none.
/// Rows need not be sorted by tenant; sorting them makes longer segments (the engine does).
/// </summary>
public sealed class TenantRows : IDisposable
{
    public int[] Slots { get; }
    public (int Start, int Count, int Slot)[] Segments { get; }
    public Device Device { get; }
    public int Count => Slots.Length;

    /// <summary>The rows of short segments (under <see cref="TenantLinear.PrefillMinRows"/>), which go to a decode form.</summary>
    readonly int[] decodeRows;
    /// <summary>The decode rows whose tenant term goes to the bit-serial form, and their tenants.</summary>
    readonly int[] bitsRows;
    readonly HashSet<int> bitsSlots;
    /// <summary>The decode rows of tenants when every decode tenant has few rows (the streamed form's entries).</summary>
    readonly int[] fewRows;
    Tensor? deviceSlots, decodeList, mmaGroups, mmaGroupsBits, bitsList, fewList;

    /// <summary>I32 [rows] on the device: <see cref="Slots"/>.</summary>
    public Tensor DeviceSlots => deviceSlots ??= Tensor.From(Slots, [Slots.Length], Device);

    /// <summary>I32 on the device: the rows of short segments, for the CUDA-core decode kernel; null when there are none.</summary>
    public Tensor? DecodeList => decodeRows.Length == 0 ? null : decodeList ??= Tensor.From(decodeRows, [decodeRows.Length], Device);

    /// <summary>I32 [groups, <see cref="MmaGroupInts"/>] on the device, for the tensor-core decode form: the decode rows
    /// sorted by slot (so a group holds few tenants) in groups of 8, each as 8 row ids (−1 past the end), their 8 slots
    /// and the group's distinct slots ≥ 0 (−1 after the last). Null when no row goes to the decode form.</summary>
    public Tensor? MmaGroups => MmaGroupCount == 0 ? null : mmaGroups ??= Tensor.From(GroupTable(), [MmaGroupCount, MmaGroupInts], Device);
    public int MmaGroupCount => (decodeRows.Length + 7) / 8;

    /// <summary>The same groups with the bit-serial tenants left out of each group's tenant list, so the tensor-core
    /// form gives those rows the base term alone (TenantLinearBits.cs adds theirs).</summary>
    public Tensor? MmaGroupsBits => MmaGroupCount == 0 ? null : mmaGroupsBits ??= Tensor.From(GroupTable(bitsSlots), [MmaGroupCount, MmaGroupInts], Device);

    /// <summary>I32 [<see cref="BitsCount"/>, 2] on the device: (row, slot) of each decode row whose tenant has at most
    /// <see cref="TenantLinear.BitsMaxRows"/> of them, when at least <see cref="TenantLinear.BitsMinTenants"/> tenants do
    /// (read when the rows are made).</summary>
    public Tensor? BitsList => bitsRows.Length == 0 ? null : bitsList ??= Tensor.From(bitsRows.SelectMany(r => new[] { r, Slots[r] }).ToArray(), [bitsRows.Length, 2], Device);
    public int BitsCount => bitsRows.Length;

    /// <summary>Every decode row is on the base alone or has its tenant term in the bit-serial form.</summary>
    public bool DecodeTenantsAllBits { get; }
    public const int MmaGroupInts = 24;

    /// <summary>Every decode row is on the base or of a tenant with at most <see cref="TenantLinear.BitsMaxRows"/> decode
    /// rows: the streamed form (TenantLinearStream.cs) can take the whole batch, base and tenant terms in one kernel.</summary>
    public bool DecodeAllFew { get; }

    /// <summary>The distinct tenants of the decode rows when <see cref="DecodeAllFew"/>, else 0.</summary>
    public int FewTenants { get; }

    /// <summary>I32 [<see cref="FewCount"/>, 2] on the device: (row, slot) of each decode row with a tenant when
    /// <see cref="DecodeAllFew"/>, by slot and then row; null when there are none.</summary>
    public Tensor? FewList => fewRows.Length == 0 ? null : fewList ??= Tensor.From(fewRows.SelectMany(r => new[] { r, Slots[r] }).ToArray(), [fewRows.Length, 2], Device);
    public int FewCount => fewRows.Length;

    /// <summary>The decode rows on the base: they come first in the groups (<see cref="MmaGroups"/>), so the row at group
    /// position FewBase + e is <see cref="FewList"/>'s entry e.</summary>
    public int FewBase { get; }

    /// <summary>Maximal runs of rows of one slot (−1: the base), in order.</summary>
    public static (int Start, int Count, int Slot)[] Runs(int[] slots)
    {
        var runs = new List<(int, int, int)>();
        for (int r = 0; r < slots.Length;)
        {
            int e = r + 1;
            while (e < slots.Length && slots[e] == slots[r]) e++;
            runs.Add((r, e - r, slots[r]));
            r = e;
        }
        return [.. runs];
    }

    public TenantRows(int[] slots, Device device)
    {
        Slots = slots;
        Device = device;
        Segments = Runs(slots);
        decodeRows = Segments.Where(s => s.Count < TenantLinear.PrefillMinRows).SelectMany(s => Enumerable.Range(s.Start, s.Count)).ToArray();
        var few = decodeRows.Where(r => slots[r] >= 0).GroupBy(r => slots[r]).Where(g => g.Count() <= TenantLinear.BitsMaxRows).ToArray();
        bool bits = few.Length > 0 && few.Length >= TenantLinear.BitsMinTenants;
        bitsRows = bits ? few.SelectMany(g => g).Order().ToArray() : [];
        bitsSlots = bits ? [.. few.Select(g => g.Key)] : [];
        DecodeTenantsAllBits = decodeRows.All(r => slots[r] < 0 || bitsSlots.Contains(slots[r]));
        var byTenant = decodeRows.Where(r => slots[r] >= 0).GroupBy(r => slots[r]).ToArray();
        DecodeAllFew = byTenant.All(g => g.Count() <= TenantLinear.BitsMaxRows);
        FewTenants = DecodeAllFew ? byTenant.Length : 0;
        // In the groups' order (by slot, then row), after the base rows: entry e is group position FewBase + e.
        fewRows = DecodeAllFew ? decodeRows.Where(r => slots[r] >= 0).OrderBy(r => slots[r]).ToArray() : [];
        FewBase = decodeRows.Count(r => slots[r] < 0);
    }

    int[] GroupTable() => GroupTable([]);

    /// <summary>The groups; tenants in <paramref name="leaveOut"/> are not listed as a group's tenants.</summary>
    int[] GroupTable(HashSet<int> leaveOut)
    {
        var sorted = decodeRows.OrderBy(r => Slots[r]).ToArray();   // stable: rows of a tenant keep their order
        var table = new int[MmaGroupCount * MmaGroupInts];
        for (int gr = 0; gr < MmaGroupCount; gr++)
        {
            var at = table.AsSpan(gr * MmaGroupInts, MmaGroupInts);
            at.Fill(-1);
            var rows = sorted.AsSpan(gr * 8, Math.Min(8, sorted.Length - gr * 8));
            int distinct = 0;
            for (int j = 0; j < rows.Length; j++)
            {
                at[j] = rows[j];
                at[8 + j] = Slots[rows[j]];
                if (Slots[rows[j]] >= 0 && !leaveOut.Contains(Slots[rows[j]]) && at.Slice(16, distinct).IndexOf(Slots[rows[j]]) < 0)
                    at[16 + distinct++] = Slots[rows[j]];
            }
        }
        return table;
    }

    /// <summary>Every row to tenant <paramref name="slot"/> (−1: the base).</summary>
    public static TenantRows All(int rows, int slot, Device device) => new(Enumerable.Repeat(slot, rows).ToArray(), device);

    public void Dispose()
    {
        deviceSlots?.Dispose();
        decodeList?.Dispose();
        mmaGroups?.Dispose();
        mmaGroupsBits?.Dispose();
        fewList?.Dispose();
        bitsList?.Dispose();
    }
}
