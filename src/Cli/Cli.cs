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
        root.Subcommands.Add(ServeCommand());
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
}
