using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using BitDeltaNative.Models;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>
    /// Start-up (speed issue): time from the command to the first token of a checkpoint, in fresh processes, as a user
    /// meets it. Each run starts this executable twice: once as <c>generate --max-tokens 1</c>, timed from spawn to exit,
    /// and once in a traced mode that walks generate's own steps (device, config and tokenizer, weights, first token)
    /// and stamps each against its process's start, with the kernels compiled on the way and the time that took; it
    /// then makes the same token again in the same process, which shows what a warm process pays.
    /// </summary>
    static Command BenchStartupCommand()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (config.json, *.safetensors, tokenizer.model)", Required = true };
        var runs = new Option<int>("--runs") { Description = "fresh processes of each kind", DefaultValueFactory = _ => 3 };
        var prompt = new Option<string>("--prompt") { Description = "prompt text", DefaultValueFactory = _ => "Once upon a time" };
        var child = new Option<bool>("--traced-child") { Hidden = true };
        var noStaged = new Option<bool>("--no-staged-upload") { Description = "the traced run loads the weights as the driver stages pageable bytes, not through our pinned buffers (to compare; generate keeps the default)" };
        var noCache = new Option<bool>("--no-kernel-cache") { Description = "every process compiles its kernels (BITDELTA_KERNEL_CACHE=off); by default the runs share a new, empty PTX cache, so run 1 fills it and later runs read it" };
        var cmd = new Command("startup", "Time from command to first token in fresh processes: device, weights, kernel compilation, first token.");
        foreach (var o in new Option[] { model, runs, prompt, child, noStaged, noCache, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            string dir = r.GetValue(model)!, text = r.GetValue(prompt)!, device = r.GetValue(DeviceOption)!;
            if (r.GetValue(noStaged)) LlamaWeights.UseStagedUpload = false;
            if (r.GetValue(child)) return StartupTrace(dir, text, device);
            int n = r.GetValue(runs);
            if (n < 1) throw new BitDeltaException($"--runs must be at least 1, got {n}");
            LlamaConfig.Load(dir);   // a bad folder fails here, once, not in every child
            RecordTo(r, Device.Parse(device));
            var firstToken = new List<double>();
            // the runs share one new cache folder (run 1 cold, the rest warm), or none
            string? cacheDir = r.GetValue(noCache) ? null : Path.Combine(Path.GetTempPath(), $"bitdelta-startup-cache-{Environment.ProcessId}");
            var env = new Dictionary<string, string> { ["BITDELTA_KERNEL_CACHE"] = cacheDir ?? "off" };
            if (cacheDir != null && Directory.Exists(cacheDir)) Directory.Delete(cacheDir, true);
            Console.WriteLine($"start-up of {dir} on --device {device}; {n} run(s), each two fresh processes; weights {(LlamaWeights.UseStagedUpload ? "through pinned staging buffers" : "staged by the driver (traced run)")}");
            Console.WriteLine($"kernel PTX cache: {(cacheDir == null ? "off (every process compiles)" : "a new folder shared by the runs: run 1's generate fills it")}");
            Console.WriteLine("run | generate, spawn to exit | traced: runtime | device | config+tokenizer | weights (GB/s) | first token (kernels, from cache, ILGPU s + driver s) | at | same token again");
            try
            {
                for (int i = 1; i <= n; i++)
                {
                    var sw = Stopwatch.StartNew();
                    var (rc, _, err) = RunSelf(["generate", "--base", dir, "--prompt", text, "--max-tokens", "1", "--device", device], env);
                    double wall = sw.Elapsed.TotalSeconds;
                    if (rc != 0) throw new BitDeltaException($"generate exited with {rc}: {err.Trim().Split('\n').LastOrDefault()}");
                    var (rc2, outText, err2) = RunSelf(["bench", "startup", "--model", dir, "--prompt", text, "--device", device, "--traced-child",
                                                        .. (LlamaWeights.UseStagedUpload ? Array.Empty<string>() : ["--no-staged-upload"])], env);
                    if (rc2 != 0) throw new BitDeltaException($"the traced run exited with {rc2}: {err2.Trim().Split('\n').LastOrDefault()}");
                    var kv = outText.Split('\n').First(l => l.StartsWith("startup ")).Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
                        .Select(p => p.Split('=')).ToDictionary(p => p[0], p => double.Parse(p[1], CultureInfo.InvariantCulture));
                    firstToken.Add(kv["at"]);
                    Console.WriteLine($"{i} | {wall:F2} s | {kv["runtime"]:F2} s | {kv["device"]:F2} s | {kv["tokenizer"]:F2} s | {kv["weights"]:F2} s ({kv["gb"] / kv["weights"]:F1}) | " +
                                      $"{kv["first"]:F2} s ({kv["kernels"]:F0}, {kv["cached"]:F0}, {kv["ilgpu"]:F2} + {kv["driver"]:F2} s) | {kv["at"]:F2} s | {kv["again"]:F3} s");
                }
            }
            finally
            {
                // the runs' cache is this bench's own: gone when it ends, also when a run failed
                if (cacheDir != null) { try { Directory.Delete(cacheDir, true); } catch (IOException) { } }
            }
            firstToken.Sort();
            Record("startup", $"{Path.GetFileName(Path.TrimEndingDirectorySeparator(dir))}: command to first token, median of {n}{(cacheDir == null ? ", no kernel cache" : "")}", firstToken[n / 2], "s");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The traced child: generate's steps with stamps, one line "startup key=value …" on stdout.</summary>
    static int StartupTrace(string dir, string text, string device)
    {
        double SinceStart() => (DateTime.Now - Process.GetCurrentProcess().StartTime).TotalSeconds;
        double runtime = SinceStart();
        var sw = Stopwatch.StartNew();
        double Lap() { double s = sw.Elapsed.TotalSeconds; sw.Restart(); return s; }
        var dev = Device.Parse(device);
        dev.Synchronize();
        double tDevice = Lap();
        var config = LlamaConfig.Load(dir);
        var tokenizer = Tokenizer.Load(dir, config);
        var ids = tokenizer.Encode(text);
        double tTokenizer = Lap();
        using var m = LlamaModel.Load(dir, dev);
        dev.Synchronize();
        double tWeights = Lap();
        var gen = new Generator(m);
        int first = gen.Generate([ids], 1, new SamplingOptions(), tokenizer.EosIds)[0].FirstOrDefault(-1);
        double tFirst = Lap(), at = SinceStart();
        int kernels = dev.CompiledKernels;
        double ilgpu = dev.IlgpuCompileTime.TotalSeconds, driver = dev.DriverLoadTime.TotalSeconds;
        int cached = dev.KernelsFromCache;
        int again = gen.Generate([ids], 1, new SamplingOptions(), tokenizer.EosIds)[0].FirstOrDefault(-1);
        double tAgain = Lap();
        if (again != first) throw new BitDeltaException($"the second run made token {again}, the first {first}");
        Console.WriteLine(FormattableString.Invariant(
            $"startup runtime={runtime:F3} device={tDevice:F3} tokenizer={tTokenizer:F3} weights={tWeights:F3} gb={m.Weights.ByteLength / 1e9:F3} first={tFirst:F3} at={at:F3} kernels={kernels} cached={cached} ilgpu={ilgpu:F3} driver={driver:F3} again={tAgain:F4}"));
        return 0;
    }

    /// <summary>The bitdelta CLI again with <paramref name="args"/>: this process's executable when it is the CLI; from a
    /// host that loaded the CLI's assembly (the tests), the dotnet host that runs it (DOTNET_HOST_PATH) with the CLI's dll,
    /// or the CLI's own executable beside that dll. Exit code, stdout, stderr.</summary>
    static (int Code, string Out, string Err) RunSelf(string[] args, IReadOnlyDictionary<string, string>? env = null)
    {
        string exe = Environment.ProcessPath!, dll = typeof(Cli).Assembly.Location;
        string apphost = Path.Combine(Path.GetDirectoryName(dll)!, OperatingSystem.IsWindows() ? "bitdelta.exe" : "bitdelta");
        bool viaDll = Path.GetFileNameWithoutExtension(exe) == "dotnet";
        if (System.Reflection.Assembly.GetEntryAssembly() != typeof(Cli).Assembly)
        {
            viaDll = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { } host && File.Exists(host) || !File.Exists(apphost);
            exe = viaDll ? Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet" : apphost;
        }
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (viaDll) psi.ArgumentList.Add(dll);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }
}
