using System.CommandLine;

namespace BitDeltaNative;

/// <summary>The <c>bitdelta</c> command. Each subcommand lives in its own file; this one wires them up
/// and turns a <see cref="BitDeltaException"/> into one line on stderr and exit code 1.</summary>
public static partial class Cli
{
    public static int Run(string[] args)
    {
        var root = new RootCommand("bitdelta: compress fine-tuned LLMs into 1-bit deltas over their base model (BitDelta, arXiv 2402.10193) and serve many at once.");
        root.Subcommands.Add(DevicesCommand());
        root.Subcommands.Add(InspectCommand());
        root.Subcommands.Add(AuditCommand());
        root.Subcommands.Add(GenerateCommand());
        root.Subcommands.Add(CompressCommand());
        root.Subcommands.Add(EvalCommand());
        root.Subcommands.Add(BenchCommand());
        root.Subcommands.Add(DemoCommand());
        return root.Parse(args).Invoke();
    }

    internal static readonly Option<string> DeviceOption = new("--device")
    {
        Description = "where to run: auto (CUDA if a GPU is present, else CPU), cuda, cpu, or ilgpu-cpu (ILGPU's CPU accelerator, for checking kernels)",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>Writes a Spectre table to the current <see cref="Console.Out"/> (which tests redirect), 200 columns
    /// wide when that is not a terminal.</summary>
    internal static void WriteTable(Spectre.Console.Table table)
    {
        var console = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings { Out = new Spectre.Console.AnsiConsoleOutput(Console.Out) });
        if (Console.IsOutputRedirected || Console.Out is StringWriter) console.Profile.Width = 200;
        console.Write(table);
    }

    /// <summary>Runs a command body; user errors become one line on stderr and exit code 1.</summary>
    internal static int Guard(Func<int> body)
    {
        try { return body(); }
        catch (BitDeltaException e)
        {
            Console.Error.WriteLine($"bitdelta: error: {e.Message}");
            return 1;
        }
    }

    static Command DevicesCommand()
    {
        var cmd = new Command("devices", "List the devices this machine offers and check that the chosen one starts.");
        cmd.Options.Add(DeviceOption);
        cmd.SetAction(r => Guard(() =>
        {
            Console.WriteLine($"CUDA available: {(Device.CudaAvailable ? "yes" : "no")}");
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            Console.WriteLine($"selected: {dev}");
            if (dev.IsIlgpu)
            {
                var a = dev.Accelerator;
                Console.WriteLine($"  memory {a.MemorySize / (1024.0 * 1024 * 1024):F1} GiB, warp {a.WarpSize}, max threads/group {a.MaxNumThreadsPerGroup}, multiprocessors {a.NumMultiprocessors}");
            }
            return 0;
        }));
        return cmd;
    }

    static Command DemoCommand()
    {
        var cmd = new Command("demo", "The end-to-end demo. For now a placeholder: it checks the device and a safetensors round trip; compressing, evaluating and generating from the shipped demo pair arrive with the compression issue.");
        cmd.Options.Add(DeviceOption);
        cmd.SetAction(r => Guard(() =>
        {
            var dev = Device.Parse(r.GetValue(DeviceOption)!);
            Console.WriteLine($"device: {dev}");
            string dir = Directory.CreateTempSubdirectory("bitdelta-demo-").FullName;
            string file = Path.Combine(dir, "model.safetensors");
            var rng = new Random(0);
            var w = new float[64 * 48];
            for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 2 - 1);
            using (var t = Tensor.From(w, [64, 48], dev).Cast(DType.BF16))
                SafetensorsWriter.Write(file, [("model.layers.0.mlp.up_proj.weight", t)], new Dictionary<string, string> { ["format"] = "pt" });
            using var ck = Checkpoint.Open(dir);
            var back = ck.Get("model.layers.0.mlp.up_proj.weight").ToFloatArray();
            double err = 0;
            for (int i = 0; i < w.Length; i++) err = Math.Max(err, Math.Abs(back[i] - w[i]) / Math.Abs(w[i]));
            Console.WriteLine($"wrote and read back {file}: 64x48 bf16, worst relative rounding error {err:E2} (bf16 keeps 8 bits: < 3.9e-3)");
            Directory.Delete(dir, true);
            Console.WriteLine("placeholder: compressing, evaluating and generating from the shipped demo pair arrives with the compression issue (5). " +
                              "Inference works today: bitdelta generate --model DIR --prompt TEXT; bitdelta audit checks the GPU kernels.");
            return err < 3.9e-3 ? 0 : 1;
        }));
        return cmd;
    }
}
