using System.CommandLine;
using System.Diagnostics;

namespace BitDeltaNative;

public static partial class Cli
{
    static Command BenchCommand()
    {
        var cmd = new Command("bench", "Benchmarks; results go to bench/RESULTS.md by hand, with the device and date.");
        cmd.Subcommands.Add(BenchOpenCommand());
        cmd.Subcommands.Add(BenchModelCommand());
        cmd.Subcommands.Add(BenchGemvCommand());
        cmd.Subcommands.Add(BenchGemmCommand());
        cmd.Subcommands.Add(BenchCodecsCommand());
        cmd.Subcommands.Add(BenchDistillCommand());
        cmd.Subcommands.Add(BenchMultitenantCommand());
        cmd.Subcommands.Add(BenchServeCommand());
        cmd.Subcommands.Add(BenchStartupCommand());
        cmd.Subcommands.Add(BenchLaunchCommand());
        cmd.Subcommands.Add(BenchReportCommand());
        cmd.Subcommands.Add(BenchAllCommand());
        cmd.Options.Add(RecordOption);
        return cmd;
    }

    /// <summary>Opening a checkpoint must not copy it: the file is mapped, and only the pages a tensor
    /// touches are read. This writes a file of the given size (once) and reports the open time, the
    /// managed bytes allocated and the change in resident memory.</summary>
    static Command BenchOpenCommand()
    {
        var size = new Option<double>("--size-gb") { Description = "file size in GB", DefaultValueFactory = _ => 1.0 };
        var dir = new Option<string>("--dir") { Description = "folder for the test file", DefaultValueFactory = _ => Path.GetTempPath() };
        var cmd = new Command("open", "Time opening a large safetensors file (memory-mapped, no copy).");
        cmd.Options.Add(size);
        cmd.Options.Add(dir);
        cmd.SetAction(r => Guard(() =>
        {
            long bytes = (long)(r.GetValue(size) * 1e9);
            string file = Path.Combine(r.GetValue(dir)!, $"bitdelta-bench-open-{bytes}.safetensors");
            if (!File.Exists(file))
            {
                // 4096-wide f16 rows, like a 7B model's matrices, split into tensors of at most 1 GiB.
                const int cols = 4096;
                var tensors = new List<(string, Tensor)>();
                long rowsLeft = bytes / (cols * 2);
                var rng = new Random(1);
                for (int i = 0; rowsLeft > 0; i++)
                {
                    int rows = (int)Math.Min(rowsLeft, (1L << 30) / (cols * 2));
                    var data = new byte[(long)rows * cols * 2];
                    rng.NextBytes(data);
                    tensors.Add(($"model.layers.{i}.mlp.up_proj.weight", Tensor.FromHostMemory(data, [rows, cols], DType.F16)));
                    rowsLeft -= rows;
                }
                SafetensorsWriter.Write(file, tensors);
                Console.WriteLine($"wrote {file}");
            }
            GC.Collect();
            long rss0 = Process.GetCurrentProcess().WorkingSet64, alloc0 = GC.GetTotalAllocatedBytes(true);
            var sw = Stopwatch.StartNew();
            using var f = SafetensorsFile.Open(file);
            var tensor = f.Get(f.Entries[0].Name);
            double openMs = sw.Elapsed.TotalMilliseconds;
            long alloc = GC.GetTotalAllocatedBytes(true) - alloc0;
            long rss = Process.GetCurrentProcess().WorkingSet64 - rss0;
            Console.WriteLine($"file {new FileInfo(file).Length / 1e9:F2} GB, {f.Entries.Count} tensors: open + first tensor view {openMs:F2} ms, " +
                              $"managed allocation {alloc / 1024.0:F0} KiB, resident memory change {rss / (1024.0 * 1024):F1} MiB");
            return 0;
        }));
        return cmd;
    }
}
