using System.Diagnostics;
using System.Text.RegularExpressions;
using BitDeltaNative.Kernels;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Kernels;

/// <summary>
/// Every kernel through ptxas for sm_90a, without a GPU: the PTX tests (KernelTests) show ILGPU's backend accepts a
/// kernel, these show what the assembler makes of it. A spill is invisible in the PTX (ILGPU writes registers; ptxas
/// decides they do not fit), and a spill inside a loop is a local-memory round trip every iteration. ptxas and
/// nvdisasm are Debian's nvidia-cuda-toolkit 12.4, fetched by tools/ptx/fetch-ptxas.sh (which .ci/run calls); without
/// them the test says it is skipped. ptxas 12.4 reads PTX ISA 8.4, so ILGPU's 8.8 header is rewritten (nothing our
/// kernels use is newer). On the H200 the driver's compiler gave the same register counts where compared
/// (bench/NOTES.md, "The kernels' SASS without a GPU").
/// </summary>
public class SassTests
{
    /// <summary>Kernels known to spill inside a loop, with the reason they are left so.</summary>
    static readonly Dictionary<string, string> KnownLoopSpills = new()
    {
        // q as three bf16 pieces held over the whole key loop: 255 registers and 132 bytes spilled (f16's two pieces fit)
        ["Attention.PrefillMmaBf16Kernel"] = "bench/NOTES.md: left for when bf16 prefill is timed",
    };

    static string? Tools()
    {
        var env = Environment.GetEnvironmentVariable("BITDELTA_CUDA_TOOLS");
        var dir = Path.Combine(env ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "bitdelta", "cuda-12.4"), "usr", "bin");
        return File.Exists(Path.Combine(dir, "ptxas")) && File.Exists(Path.Combine(dir, "nvdisasm")) ? dir : null;
    }

    [Theory]
    [MemberData(nameof(KernelTests.KernelMethods), MemberType = typeof(KernelTests))]
    public void Kernel_assembles_for_sm_90a_within_its_launch_bounds_with_no_spill_loads_in_its_innermost_loops(string name)
    {
        var tools = Tools();
        if (tools == null)
            Assert.Skip("ptxas and nvdisasm are absent (BITDELTA_CUDA_TOOLS, else ~/.cache/bitdelta/cuda-12.4): tools/ptx/fetch-ptxas.sh fetches them; .ci/run does");
        var kernel = Ptx.AllKernels().Single(m => Ptx.Name(m) == name);
        var ptx = Regex.Replace(Ptx.Compile(kernel), @"^\.version \d+\.\d+", ".version 8.4", RegexOptions.Multiline)
            .Replace(".target sm_90\n", ".target sm_90a\n");
        using var dir = new TempDir();
        string ptxPath = dir.File("k.ptx"), cubin = dir.File("k.cubin");
        File.WriteAllText(ptxPath, ptx);
        var (rc, info) = Run(Path.Combine(tools, "ptxas"), "-arch=sm_90a", "-v", "-o", cubin, ptxPath);
        Assert.True(rc == 0, $"{name}: ptxas failed: {info}");
        int registers = int.Parse(Regex.Match(info, @"Used (\d+) registers").Groups[1].Value);
        var bounds = Regex.Match(ptx, @"\.maxntid (\d+), 1, 1\s+\.minnctapersm (\d+)");
        if (bounds.Success)
        {
            int cap = 65536 / (int.Parse(bounds.Groups[1].Value) * int.Parse(bounds.Groups[2].Value));
            Assert.True(registers <= cap, $"{name}: {registers} registers past its launch bounds' {cap}");
        }
        var (drc, sass) = Run(Path.Combine(tools, "nvdisasm"), "-c", cubin);
        Assert.True(drc == 0, $"{name}: nvdisasm failed");
        int loads = LocalLoadsInInnermostLoops(sass);
        if (KnownLoopSpills.TryGetValue(name, out var why))
            Assert.True(loads > 0, $"{name} no longer loads from local memory in its loops ({why}): take it off {nameof(KnownLoopSpills)}");
        else
            Assert.True(loads == 0, $"{name}: {loads} local-memory loads (spilled values) in its innermost loops, {registers} registers");
    }

    /// <summary>Local-memory loads (LDL) in innermost loops: the loops a warp spends its time in (the products' loops),
    /// where a spilled value's load is a round trip every iteration. A loop is a backward branch with its target, ptxas
    /// laying a loop's body out contiguously (tools/ptx/sass-loops.py reads loops the same way); innermost: no other
    /// loop inside it. Outer loops are left out on purpose: ptxas wraps shuffles under divergent control in
    /// convergence loops (WARPSYNC … BRA back), which run once when the warp is converged, and a kernel's work loop
    /// runs a few times a block. Stores alone (STL with no load: ILGPU's operand depots ptxas could not drop) cost no
    /// round trip.</summary>
    static int LocalLoadsInInnermostLoops(string sass)
    {
        var insns = new List<(int Addr, string Text)>();
        var labels = new Dictionary<string, int>();
        var pending = new List<string>();
        foreach (var line in sass.Split('\n'))
        {
            var label = Regex.Match(line, @"^\s*(\.L_x_\d+):");
            if (label.Success) { pending.Add(label.Groups[1].Value); continue; }
            var insn = Regex.Match(line, @"/\*([0-9a-f]{4,})\*/\s+(.*?);");
            if (!insn.Success) continue;
            int addr = Convert.ToInt32(insn.Groups[1].Value, 16);
            foreach (var p in pending) labels[p] = addr;
            pending.Clear();
            insns.Add((addr, insn.Groups[2].Value));
        }
        Assert.True(insns.Count > 0, "nvdisasm printed no instructions");
        var loops = new List<(int From, int To)>();
        foreach (var (addr, text) in insns)
        {
            var target = Regex.Match(text, @"BRA.*`\((\.L_x_\d+)\)");
            if (target.Success && labels.TryGetValue(target.Groups[1].Value, out int to) && to <= addr) loops.Add((to, addr));
        }
        var innermost = loops.Where(l => !loops.Any(o => o != l && l.From <= o.From && o.To <= l.To)).ToList();
        return insns.Count(x => Regex.IsMatch(x.Text, @"\bLDL\b") && innermost.Any(l => l.From <= x.Addr && x.Addr <= l.To));
    }

    static (int Rc, string Output) Run(string exe, params string[] args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + err.Result);
    }
}
