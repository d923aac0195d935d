using System.Reflection;
using System.Text;
using ILGPU.Backends.PTX;
using System.Text.RegularExpressions;

namespace BitDeltaNative;

/// <summary>Marks a kernel whose PTX goes through <see cref="PtxPasses.Promote"/> before the driver sees it.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class PromoteLocalsAttribute : Attribute;

/// <summary>Marks a kernel that uses Hopper's architecture-specific instructions (<c>wgmma</c>, <c>setmaxnreg</c>): its PTX
/// targets <c>sm_90a</c>, not the <c>sm_90</c> ILGPU writes (PTX ISA §11.2, the "a" targets).</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class ArchSpecificAttribute : Attribute;

/// <summary>Launch bounds for a kernel's PTX entry (PTX ISA §11.4, <c>.maxntid</c> and <c>.minnctapersm</c>): at most
/// <see cref="MaxThreads"/> threads a block, and registers few enough for <see cref="MinBlocks"/> blocks a
/// multiprocessor, which ptxas then keeps to (spilling if it must).</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class LaunchBoundsAttribute(int maxThreads, int minBlocks) : Attribute
{
    public int MaxThreads { get; } = maxThreads;
    public int MinBlocks { get; } = minBlocks;
}

/// <summary>
/// ILGPU (1.5.3) passes every inline-PTX operand (<c>CudaAsm.EmitRef</c>) through a local variable of its own: a
/// <c>.local</c> depot of 4 or 8 bytes, its address taken once (<c>mov.b64 %rdN, __local_depotK</c>), the value stored
/// before the asm and loaded after it. ptxas normally turns such depots into registers; with <c>cp.async</c> anywhere in
/// the kernel (CUDA 13's ptxas) it keeps every one of them in memory, tens of local round trips a product
/// (bench/NOTES.md, "The GEMM on half operands"). This pass does what ptxas then does not: a depot whose address is used
/// only as the whole operand of <c>ld.local</c> / <c>st.local</c> of its own size becomes one register, each store a
/// <c>mov</c> into it and each load a <c>mov</c> out of it. A register is a mutable variable in PTX, so this is exact
/// whatever the control flow; a depot used any other way (an offset into it, its address passed on) is left as it is.
/// </summary>
public static class PtxPasses
{
    static readonly Regex Depot = new(@"^[ \t]*\.local[ \t]+\.align[ \t]+\d+[ \t]+\.b8[ \t]+(__local_depot\d+)\[(\d+)\];[ \t]*$", RegexOptions.Multiline);

    /// <summary>The kernel as the driver should get it: rewritten when <paramref name="method"/> is marked
    /// <see cref="PromoteLocalsAttribute"/>, else as ILGPU made it.</summary>
    public static PTXCompiledKernel Apply(PTXCompiledKernel compiled, MethodInfo method)
    {
        string ptx = compiled.PTXAssembly;
        if (method.GetCustomAttribute<PromoteLocalsAttribute>() != null) ptx = Promote(ptx).Ptx;
        if (method.GetCustomAttribute<LaunchBoundsAttribute>() is { } b) ptx = Bound(ptx, b.MaxThreads, b.MinBlocks);
        if (method.GetCustomAttribute<ArchSpecificAttribute>() != null) ptx = ArchSpecific(ptx);
        ptx = WithoutGridDependency(ptx);
        return ReferenceEquals(ptx, compiled.PTXAssembly) ? compiled : PtxCache.WithPtx(compiled, ptx);
    }

    /// <summary><c>griddepcontrol</c> (dependent launches, DependentLaunch.cs) is sm_90's: for an older target its
    /// lines are taken out, which is what they mean there (a kernel launched the plain way waits for nothing and
    /// releases nothing).</summary>
    public static string WithoutGridDependency(string ptx)
    {
        if (!ptx.Contains("griddepcontrol", StringComparison.Ordinal)) return ptx;
        var m = Regex.Match(ptx, @"^\.target[ \t]+sm_(\d+)", RegexOptions.Multiline);
        if (m.Success && int.Parse(m.Groups[1].Value) >= DependentLaunch.MinArchitecture) return ptx;
        return Regex.Replace(ptx, @"^[ \t]*griddepcontrol\.[a-z_]+;[ \t]*\n", "", RegexOptions.Multiline);
    }

    /// <summary><c>.target sm_90</c> → <c>.target sm_90a</c>; any other target is refused (the instructions are Hopper's).</summary>
    public static string ArchSpecific(string ptx)
    {
        var m = Regex.Match(ptx, @"^\.target[ \t]+(\S+)[ \t]*$", RegexOptions.Multiline);
        if (!m.Success || m.Groups[1].Value != "sm_90")
            throw new NotSupportedException($"sm_90a kernel: its PTX targets {(m.Success ? m.Groups[1].Value : "nothing")}, not sm_90 (needs a Hopper GPU: H100, H200)");
        return ptx[..m.Groups[1].Index] + "sm_90a" + ptx[(m.Groups[1].Index + m.Groups[1].Length)..];
    }

    /// <summary>The entry's parameter list closed by <c>)</c> on a line of its own, then <c>{</c>: the bounds go between
    /// them. PTX that is not laid out so is refused rather than guessed at.</summary>
    public static string Bound(string ptx, int maxThreads, int minBlocks)
    {
        if (maxThreads < 1 || minBlocks < 1) throw new ArgumentException($"launch bounds: {maxThreads} threads, {minBlocks} blocks");
        int entry = ptx.IndexOf(".entry ", StringComparison.Ordinal);
        int close = entry < 0 ? -1 : ptx.IndexOf("\n)\n{", entry, StringComparison.Ordinal);
        if (close < 0 || ptx.IndexOf(".entry ", entry + 1, StringComparison.Ordinal) >= 0 || ptx.Contains(".maxntid", StringComparison.Ordinal))
            throw new NotSupportedException("launch bounds: not one kernel entry with its parameter list closed on a line of its own");
        return ptx[..(close + 3)] + $".maxntid {maxThreads}, 1, 1\n.minnctapersm {minBlocks}\n" + ptx[(close + 3)..];
    }

    /// <summary>The rewritten PTX and how many depots became registers.</summary>
    public static (string Ptx, int Promoted) Promote(string ptx)
    {
        var lines = ptx.Split('\n');
        var depots = new Dictionary<string, (int Line, int Bytes)>();
        for (int i = 0; i < lines.Length; i++)
            if (Depot.Match(lines[i]) is { Success: true } m && int.Parse(m.Groups[2].Value) is 2 or 4 or 8 && !depots.ContainsKey(m.Groups[1].Value))
                depots[m.Groups[1].Value] = (i, int.Parse(m.Groups[2].Value));
        if (depots.Count == 0) return (ptx, 0);

        // each depot's address register: the one line that takes its address
        var addrOf = new Dictionary<string, (string Reg, int Line)>();
        var taken = new Dictionary<string, int>();
        var addrRx = new Regex(@"^[ \t]*mov\.(?:b64|u64)[ \t]+(%rd\d+),[ \t]*(__local_depot\d+);[ \t]*$");
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].Contains("__local_depot", StringComparison.Ordinal)) continue;
            foreach (Match u in Regex.Matches(lines[i], @"__local_depot\d+\b")) taken[u.Value] = taken.GetValueOrDefault(u.Value) + 1;
            if (addrRx.Match(lines[i]) is { Success: true } a && depots.ContainsKey(a.Groups[2].Value))
                addrOf[a.Groups[2].Value] = addrOf.ContainsKey(a.Groups[2].Value) ? ("", -1) : (a.Groups[1].Value, i);
        }
        // the depot named twice only (declaration, address), its address register defined once and used only as [reg]
        // of ld.local / st.local of the depot's size
        var regUses = new Dictionary<string, List<int>>();
        var regRx = new Regex(@"%rd\d+\b");
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].Contains("%rd", StringComparison.Ordinal)) continue;
            foreach (Match r in regRx.Matches(lines[i]))
            {
                if (!regUses.TryGetValue(r.Value, out var l)) regUses[r.Value] = l = [];
                l.Add(i);
            }
        }
        var access = new Regex(@"^([ \t]*)(ld|st)\.local\.([bfus])(\d+)[ \t]+(.*);[ \t]*$");
        var rewrite = new Dictionary<int, string>();
        var drop = new HashSet<int>();
        var declare = new Dictionary<int, string>();
        int promoted = 0;
        foreach (var (name, (declLine, bytes)) in depots)
        {
            if (taken.GetValueOrDefault(name) != 2 || !addrOf.TryGetValue(name, out var ad) || ad.Line < 0) continue;
            string reg = ad.Reg, val = "%ldp" + name["__local_depot".Length..];
            var mine = new Dictionary<int, string>();
            bool ok = true;
            foreach (int i in regUses[reg])
            {
                if (i == ad.Line) continue;
                var m = access.Match(lines[i]);
                if (!m.Success || int.Parse(m.Groups[4].Value) != 8 * bytes || mine.ContainsKey(i) || rewrite.ContainsKey(i)) { ok = false; break; }
                string type = m.Groups[3].Value + m.Groups[4].Value, ops = m.Groups[5].Value, indent = m.Groups[1].Value;
                int comma = m.Groups[2].Value == "ld" ? ops.LastIndexOf(',') : ops.IndexOf(',');
                if (comma < 0) { ok = false; break; }
                string left = ops[..comma].Trim(), right = ops[(comma + 1)..].Trim();
                if (m.Groups[2].Value == "ld" && right == $"[{reg}]" && !left.Contains('['))
                    mine[i] = $"{indent}mov.{type}\t{left}, {val};";
                else if (m.Groups[2].Value == "st" && left == $"[{reg}]" && !right.Contains('['))
                    mine[i] = $"{indent}mov.{type}\t{val}, {right};";
                else { ok = false; break; }
            }
            if (!ok) continue;
            foreach (var (i, s) in mine) rewrite[i] = s;
            drop.Add(ad.Line);
            declare[declLine] = $"\t.reg .b{8 * bytes} {val};";
            promoted++;
        }
        if (promoted == 0) return (ptx, 0);
        var sb = new StringBuilder(ptx.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            if (drop.Contains(i)) continue;
            sb.Append(declare.TryGetValue(i, out var d) ? d : rewrite.TryGetValue(i, out var r) ? r : lines[i]);
            if (i < lines.Length - 1) sb.Append('\n');
        }
        return (sb.ToString(), promoted);
    }
}
