using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;

namespace BitDeltaNative;

/// <summary>One headline figure of a benchmark: what was measured, its value, and the goal it is held to, if any.</summary>
public sealed record BenchFigure(string Bench, string What, double Value, string Unit, string? Goal, bool? Met, string Device, string Date);

public static partial class Cli
{
    /// <summary>
    /// The speed issue asks for "`bitdelta bench` reports all of this as one table". Every bench run with `--record FILE`
    /// appends its headline figures to FILE as JSON lines (<see cref="Record"/>). `bench report FILE …` prints them as one
    /// table: goal and whether it is met where the issue sets one. `bench all` runs the set on this machine and prints
    /// that table.
    /// </summary>
    internal static readonly Option<string?> RecordOption = new("--record")
    {
        Description = "append this run's headline figures to FILE (JSON lines), for `bitdelta bench report`",
        Recursive = true,
    };

    static string? recordPath;
    static readonly JsonSerializerOptions FigureJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    static Device? recordDevice;

    /// <summary>Starts recording for a bench command's run (its --record value, or none).</summary>
    static void RecordTo(ParseResult r, Device dev)
    {
        recordPath = r.GetValue(RecordOption);
        recordDevice = dev;
    }

    /// <summary>Appends one figure to the --record file, if there is one.</summary>
    static void Record(string bench, string what, double value, string unit, string? goal = null, bool? met = null)
    {
        if (recordPath == null || !double.IsFinite(value)) return;
        var dev = recordDevice?.ToString() ?? "";
        if (recordDevice?.Accelerator is { } a) dev = a.Name;
        var line = JsonSerializer.Serialize(new BenchFigure(bench, what, value, unit, goal, met, dev, DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)),
                                            FigureJson);
        var dir = Path.GetDirectoryName(Path.GetFullPath(recordPath));
        if (dir != null) Directory.CreateDirectory(dir);
        File.AppendAllText(recordPath, line + "\n");
    }

    /// <summary>The figures of one or more record files, in the order written; a malformed line is an error naming the
    /// file and line.</summary>
    public static List<BenchFigure> ReadFigures(IEnumerable<string> files)
    {
        var all = new List<BenchFigure>();
        foreach (var file in files)
        {
            if (!File.Exists(file)) throw new BitDeltaException($"{file}: no such record file");
            int n = 0;
            foreach (var line in File.ReadLines(file))
            {
                n++;
                if (string.IsNullOrWhiteSpace(line)) continue;
                BenchFigure? f;
                try { f = JsonSerializer.Deserialize<BenchFigure>(line); }
                catch (JsonException e) { throw new BitDeltaException($"{file}:{n}: not a bench figure ({e.Message})"); }
                if (f == null || string.IsNullOrEmpty(f.Bench) || string.IsNullOrEmpty(f.What)) throw new BitDeltaException($"{file}:{n}: a bench figure needs Bench and What");
                all.Add(f);
            }
        }
        return all;
    }

    static string Format(double v) => Math.Abs(v) >= 100 ? v.ToString("F0", CultureInfo.InvariantCulture)
        : Math.Abs(v) >= 10 ? v.ToString("F1", CultureInfo.InvariantCulture)
        : Math.Abs(v) >= 0.01 || v == 0 ? v.ToString("F2", CultureInfo.InvariantCulture) : v.ToString("G3", CultureInfo.InvariantCulture);

    /// <summary>The figures as one table: as a terminal table, or as Markdown for bench/RESULTS.md. A figure recorded twice
    /// (the same bench and what) shows its last value.</summary>
    static void PrintFigures(List<BenchFigure> figures, bool markdown)
    {
        var last = figures.GroupBy(f => (f.Bench, f.What)).Select(g => g.Last()).ToList();
        string Met(BenchFigure f) => f.Met switch { true => "met", false => "not met", null => "" };
        var devices = string.Join(", ", last.Select(f => $"{f.Device} ({f.Date})").Distinct());
        if (markdown)
        {
            Console.WriteLine($"Device: {devices}");
            Console.WriteLine();
            Console.WriteLine("| bench | figure | value | unit | goal | |");
            Console.WriteLine("| --- | --- | --- | --- | --- | --- |");
            foreach (var f in last) Console.WriteLine($"| {f.Bench} | {f.What} | {Format(f.Value)} | {f.Unit} | {f.Goal ?? ""} | {Met(f)} |");
        }
        else
        {
            Console.WriteLine($"bench figures on {devices}");
            var table = new Table().AddColumns("bench", "figure", "value", "unit", "goal", "");
            foreach (var f in last) table.AddRow(Markup.Escape(f.Bench), Markup.Escape(f.What), Format(f.Value), Markup.Escape(f.Unit), Markup.Escape(f.Goal ?? ""), Met(f));
            WriteTable(table);
        }
        int goals = last.Count(f => f.Met != null), met = last.Count(f => f.Met == true);
        Console.WriteLine($"{last.Count} figures; {goals} checked against their goal here, {met} met");
    }

    static Command BenchReportCommand()
    {
        var files = new Argument<string[]>("files") { Description = "record files written by bench commands with --record", Arity = ArgumentArity.OneOrMore };
        var markdown = new Option<bool>("--markdown") { Description = "print a Markdown table (for bench/RESULTS.md)" };
        var cmd = new Command("report", "Print the figures recorded by bench commands (--record FILE) as one table.");
        cmd.Arguments.Add(files);
        cmd.Options.Add(markdown);
        cmd.SetAction(r => Guard(() =>
        {
            var figures = ReadFigures(r.GetValue(files)!);
            if (figures.Count == 0) throw new BitDeltaException("the record files hold no figures");
            PrintFigures(figures, r.GetValue(markdown));
            return 0;
        }));
        return cmd;
    }

    /// <summary>`bench all`: the speed issue's benchmarks in one run on this machine's GPU, each recorded, then one table.
    /// The 7B model is random weights made in memory; start-up needs a checkpoint on disk (--model).</summary>
    static Command BenchAllCommand()
    {
        var model = new Option<string?>("--model") { Description = "a Llama checkpoint folder for the start-up figures (skipped without it)" };
        var quick = new Option<bool>("--quick") { Description = "tenants 1,8 and fewer samples (a check that every bench records; not for RESULTS.md)" };
        var cmd = new Command("all", "Run the GEMV, GEMM, codec, multi-tenant (7B shapes, random weights) and start-up benchmarks, record them, and print one table.");
        foreach (var o in new Option[] { model, quick, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            string file = r.GetValue(RecordOption) ?? Path.Combine(Path.GetTempPath(), $"bitdelta-bench-{DateTime.UtcNow:yyyyMMdd-HHmmss}.jsonl");
            string device = r.GetValue(DeviceOption)!;
            bool q = r.GetValue(quick);
            string tenants = q ? "1,8" : "1,8,32";
            var runs = new List<string[]>
            {
                new[] { "bench", "gemv", "--device", device }.Concat(q ? ["--iters", "3", "--launches", "2"] : []).ToArray(),
                new[] { "bench", "gemm", "--device", device }.Concat(q ? ["--rows", "64", "--iters", "2"] : []).ToArray(),
                new[] { "bench", "codecs", "--device", device, "--rows", "1", "--tenants", tenants }.Concat(q ? ["--iters", "2"] : []).ToArray(),
                new[] { "bench", "multitenant", "--device", device, "--random-7b", "--tenants", tenants, "--requests", "1", "--new-tokens", q ? "3" : "32" }
                    .Concat(q ? ["--iters", "2"] : []).ToArray(),
            };
            if (r.GetValue(model) is { } m) runs.Add(["bench", "startup", "--model", m, "--device", device, "--runs", q ? "1" : "3"]);
            foreach (var args in runs)
            {
                Console.WriteLine($"\n== bitdelta {string.Join(' ', args)}");
                int code = Run([.. args, "--record", file]);
                if (code != 0) throw new BitDeltaException($"bitdelta {string.Join(' ', args)} exited with {code}");
            }
            Console.WriteLine($"\nrecorded in {file}");
            PrintFigures(ReadFigures([file]), markdown: false);
            return 0;
        }));
        return cmd;
    }
}
