using System.CommandLine;
using System.Diagnostics;
using BitDeltaNative.Autograd;
using BitDeltaNative.Kernels;
using Spectre.Console;

namespace BitDeltaNative;

public static partial class Cli
{
    static Command AuditCommand()
    {
        var cases = new Option<int>("--cases") { Description = "random cases per kernel", DefaultValueFactory = _ => 50 };
        var seed = new Option<int>("--seed") { Description = "seed for shapes and values (a failure replays with the same seed)", DefaultValueFactory = _ => 1 };
        var only = new Option<string?>("--kernel") { Description = "only kernels whose name contains this" };
        var ptx = new Option<string?>("--ptx") { Description = "also write every kernel's PTX (SM_90) into this folder, compiled offline" };
        var cmd = new Command("audit", "Check every GPU kernel, forward and backward, against its CPU twin on random inputs (shapes include 1, primes and sizes past a tile; values never zero; outputs poisoned) on this machine's device, by relative error ‖gpu − twin‖/‖twin‖. Exit code 1 on any failure.");
        cmd.Options.Add(DeviceOption);
        cmd.Options.Add(cases);
        cmd.Options.Add(seed);
        cmd.Options.Add(only);
        cmd.Options.Add(ptx);
        cmd.SetAction(r => Guard(() =>
        {
            string? ptxDir = r.GetValue(ptx);
            if (ptxDir != null)
            {
                Directory.CreateDirectory(ptxDir);
                var kernels = Ptx.AllKernels().Concat(GradAudit.Kernels).ToList();
                foreach (var m in kernels)
                    AtomicFile.WriteAllText(Path.Combine(ptxDir, Ptx.Name(m) + ".ptx"), Ptx.Compile(m));
                Console.WriteLine($"wrote PTX of {kernels.Count} kernels to {ptxDir}");
            }
            var name = r.GetValue(DeviceOption)!;
            var dev = Device.Parse(name == "auto" && !Device.CudaAvailable ? "ilgpu-cpu" : name);
            if (!dev.IsIlgpu) throw new BitDeltaException("--device cpu: the audit checks GPU kernels; use cuda, or ilgpu-cpu to run them on ILGPU's CPU accelerator");
            int n = r.GetValue(cases);
            if (n < 1) throw new BitDeltaException($"--cases: must be at least 1, got {n}");
            string? filter = r.GetValue(only);
            Console.WriteLine($"audit on {dev}, {n} cases per kernel, seed {r.GetValue(seed)}");
            var table = new Table().AddColumns("kernel", "cases", "worst relative error", "bound", "worst shape", "result", "seconds");
            bool ok = true;
            var sw = Stopwatch.StartNew();
            foreach (var res in Audit.Run([.. Audit.All, .. GradAudit.Cases], dev, n, r.GetValue(seed), filter == null ? null : k => k.Contains(filter, StringComparison.OrdinalIgnoreCase)))
            {
                ok &= res.Passed;
                table.AddRow(Markup.Escape(res.Kernel), res.Cases.ToString(), res.WorstError.ToString("E2"), res.Bound.ToString("E0"),
                    Markup.Escape(res.WorstShape), res.Passed ? "[green]pass[/]" : "[red]FAIL[/]", sw.Elapsed.TotalSeconds.ToString("F1"));
                sw.Restart();
            }
            WriteTable(table);
            Console.WriteLine($"kernels loaded: {dev.CompiledKernels}, {dev.KernelsFromCache} of them from the PTX cache ({(PtxCache.Folder ?? "off")}); " +
                              $"ILGPU {dev.IlgpuCompileTime.TotalSeconds:F2} s, driver {dev.DriverLoadTime.TotalSeconds:F2} s");
            Console.WriteLine(ok ? "all kernels match their CPU twins" : "FAILED: some kernels differ from their CPU twins");
            return ok ? 0 : 1;
        }));
        return cmd;
    }
}
