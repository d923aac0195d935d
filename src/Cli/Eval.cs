using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using BitDeltaNative.Models;
using Spectre.Console;

namespace BitDeltaNative;

public static partial class Cli
{
    /// <summary>One model's results in an evaluation: perplexity per data file, and the task's exact match.</summary>
    internal sealed class EvalColumn(string name)
    {
        public string Name { get; } = name;
        public Dictionary<string, PerplexityResult> Perplexity { get; } = [];
        public ExactMatchResult? Task { get; set; }
        public double Seconds { get; set; }
    }

    internal sealed record EvalSpec(string BaseDir, string? ModelDir, string? DeltaPath, IReadOnlyList<string> Data, string? TaskFile,
                                    int Context, int Stride, int MaxNewTokens, bool SkipBase, Device Device, bool HalfPrefill = false);

    static Command EvalCommand()
    {
        var baseDir = new Option<string>("--base") { Description = "the base model's Hugging Face folder (its tokenizer is used for every column)", Required = true };
        var model = new Option<string?>("--model") { Description = "a full model to evaluate beside the base, e.g. the fine-tune itself" };
        var delta = new Option<string?>("--delta") { Description = "a delta file (bitdelta compress) to evaluate over the base: the compressed fine-tune" };
        var data = new Option<string[]>("--data") { Description = "text to measure perplexity on; give it several times for several files. A .jsonl file holds {\"text\": …} documents, each followed by a blank line; any other file is read as it is", AllowMultipleArgumentsPerToken = false };
        var task = new Option<string?>("--task") { Description = "a JSON-lines file of {\"prompt\", \"answer\"}: exact-match accuracy of greedy answers (first line, spaces trimmed)" };
        var context = new Option<int>("--context") { Description = "tokens of context before the scored tokens of each window", DefaultValueFactory = _ => 1024 };
        var stride = new Option<int>("--stride") { Description = "tokens scored per window; windows move by this much", DefaultValueFactory = _ => 512 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "tokens generated per task answer at most", DefaultValueFactory = _ => 16 };
        var skipBase = new Option<bool>("--skip-base") { Description = "do not evaluate the base itself" };
        var halfPrefill = new Option<bool>("--half-prefill") { Description = "run each window's linears on x rounded to the weights' f16/bf16 (as transformers does for a half model; tensor-core GEMM, GPU only)" };
        var json = new Option<string?>("--json") { Description = "also write the results as JSON to this file (not overwritten if it exists)" };
        var cmd = new Command("eval",
            "Perplexity (and optionally a task's exact-match accuracy) of the base, a full model and a compressed fine-tune, side by side. " +
            "Perplexity is BitDelta's (bitdelta/eval_ppl.py): the text is one token stream cut to a multiple of --stride; windows of " +
            "--context + --stride tokens move by --stride; only each window's last --stride tokens are scored; perplexity = exp(mean of the windows' mean NLL).");
        foreach (var o in new Option[] { baseDir, model, delta, data, task, context, stride, maxNew, skipBase, halfPrefill, json, DeviceOption }) cmd.Options.Add(o);
        cmd.SetAction(r => Guard(() =>
        {
            var spec = new EvalSpec(r.GetValue(baseDir)!, r.GetValue(model), r.GetValue(delta), r.GetValue(data) ?? [], r.GetValue(task),
                                    r.GetValue(context), r.GetValue(stride), r.GetValue(maxNew), r.GetValue(skipBase), Device.Parse(r.GetValue(DeviceOption)!),
                                    r.GetValue(halfPrefill));
            string? jsonPath = r.GetValue(json);
            if (jsonPath != null && File.Exists(jsonPath)) throw new BitDeltaException($"--json {jsonPath}: the file exists; choose another name");
            var columns = RunEval(spec);
            PrintEval(spec, columns, null);
            if (jsonPath != null)
            {
                WriteEvalJson(jsonPath, spec, columns);
                Console.WriteLine($"wrote {jsonPath}");
            }
            return 0;
        }));
        return cmd;
    }

    internal static List<EvalColumn> RunEval(EvalSpec s)
    {
        if (s.Data.Count == 0 && s.TaskFile == null) throw new BitDeltaException("give --data FILE (perplexity) or --task FILE (accuracy), or both");
        if (s.SkipBase && s.ModelDir == null && s.DeltaPath == null) throw new BitDeltaException("--skip-base leaves nothing to evaluate: give --model or --delta");
        if (s.MaxNewTokens < 1) throw new BitDeltaException($"--max-new-tokens must be >= 1, got {s.MaxNewTokens}");
        Perplexity.Windows(0, s.Context, s.Stride);   // checks --context and --stride before anything loads
        if (s.HalfPrefill && !s.Device.IsIlgpu) throw new BitDeltaException("--half-prefill: the half-operand GEMM runs on a GPU (--device cuda, or ilgpu-cpu to check it on the CPU)");
        var baseConfig = LlamaConfig.Load(s.BaseDir);
        var tokenizer = Tokenizer.Load(s.BaseDir, baseConfig);
        var texts = s.Data.Select(f => (File: f, Ids: tokenizer.Encode(Perplexity.ReadText(f)))).ToList();
        var task = s.TaskFile != null ? ExactMatch.Read(s.TaskFile) : null;
        if (s.ModelDir != null) Compressor.CheckPair(s.BaseDir, baseConfig, s.ModelDir, LlamaConfig.Load(s.ModelDir));
        var columns = new List<EvalColumn>();

        EvalColumn Measure(string name, LlamaModel m, DeltaWeights? d)
        {
            var col = new EvalColumn(name);
            var sw = Stopwatch.StartNew();
            foreach (var (file, ids) in texts)
                col.Perplexity[file] = Perplexity.Evaluate(m, d, ids, s.Context, s.Stride, ProgressLine($"{name}: {Path.GetFileName(file)} windows"));
            if (task != null) col.Task = ExactMatch.Evaluate(m, d, tokenizer, task, s.MaxNewTokens, progress: ProgressLine($"{name}: {Path.GetFileName(s.TaskFile)} questions"));
            col.Seconds = sw.Elapsed.TotalSeconds;
            return col;
        }

        // Windows and task prompts both fit (the reference does not stop a window at max_position_embeddings either).
        int maxPositions = Math.Max(s.Context + s.Stride, 512);
        if (!s.SkipBase || s.DeltaPath != null)
        {
            using var baseModel = LlamaModel.Load(s.BaseDir, s.Device, maxPositions, ProgressLine("loading base"));
            baseModel.HalfPrefill = s.HalfPrefill;
            if (!s.SkipBase) columns.Add(Measure("base", baseModel, null));
            if (s.DeltaPath != null)
            {
                using var delta = DeltaWeights.Load(s.DeltaPath, s.BaseDir, baseConfig, s.Device);
                columns.Add(Measure("compressed", baseModel, delta));
            }
        }
        if (s.ModelDir != null)
        {
            using var m = LlamaModel.Load(s.ModelDir, s.Device, maxPositions, ProgressLine("loading model"));
            m.HalfPrefill = s.HalfPrefill;
            columns.Insert(s.SkipBase ? 0 : 1, Measure(s.DeltaPath != null ? "fine-tune" : "model", m, null));
        }
        return columns;
    }

    /// <summary>The side-by-side table; <paramref name="oracle"/> adds PyTorch's numbers where they are known.</summary>
    internal static void PrintEval(EvalSpec s, List<EvalColumn> columns, JsonNode? oracle)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumn("");
        JsonNode? Oracle(EvalColumn c) => oracle?["models"]?[OracleName(c.Name)];
        foreach (var c in columns)
        {
            table.AddColumn(new TableColumn($"[bold]{c.Name}[/]").RightAligned());
            if (Oracle(c) != null) table.AddColumn(new TableColumn($"[grey]{c.Name} (PyTorch)[/]").RightAligned());
        }
        // One row: each column's cell, then PyTorch's beside it where the oracle has that model.
        void Row(string label, Func<EvalColumn, string> ours, Func<JsonNode, string> theirs)
        {
            var cells = new List<string> { label };
            foreach (var c in columns)
            {
                cells.Add(ours(c));
                if (Oracle(c) is { } o) cells.Add($"[grey]{theirs(o)}[/]");
            }
            table.AddRow(cells.ToArray());
        }
        string F(double v) => v >= 1e4 ? v.ToString("E3") : v.ToString("F4");
        foreach (var file in s.Data)
        {
            string key = Path.GetFileName(file);
            Row($"perplexity {Markup.Escape(key)}", c => F(c.Perplexity[file].Perplexity), o => o[key]?["perplexity"] is { } p ? F((double)p) : "");
        }
        if (s.TaskFile != null)
        {
            string key = Path.GetFileName(s.TaskFile);
            Row($"accuracy {Markup.Escape(key)}", c => $"{c.Task!.Accuracy:P1} ({c.Task.Right}/{c.Task.Total})",
                o => o[$"{key} accuracy"] is { } a ? ((double)a).ToString("P1") : "");
        }
        Row("seconds", c => $"{c.Seconds:F1}", _ => "");
        var first = s.Data.Count > 0 ? columns[0].Perplexity[s.Data[0]] : null;
        table.Caption($"context {s.Context} + stride {s.Stride}" + (first != null ? $"; {first.Windows} windows, {first.ScoredTokens} tokens scored of {first.StreamTokens} in {Path.GetFileName(s.Data[0])}" : "") + $"; {s.Device}");
        WriteTable(table);
    }

    static string OracleName(string column) => column switch { "fine-tune" => "finetuned", _ => column };

    /// <summary>The results as JSON (oracle.json's shape: models → file → perplexity), written atomically.</summary>
    internal static void WriteEvalJson(string path, EvalSpec s, List<EvalColumn> columns) =>
        AtomicFile.WriteAllText(path, EvalJson(s, columns).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

    static JsonObject EvalJson(EvalSpec s, List<EvalColumn> columns)
    {
        var models = new JsonObject();
        foreach (var c in columns)
        {
            var m = new JsonObject();
            foreach (var (file, p) in c.Perplexity)
                m[Path.GetFileName(file)] = new JsonObject { ["perplexity"] = p.Perplexity, ["windows"] = p.Windows, ["tokens"] = p.StreamTokens, ["scored"] = p.ScoredTokens };
            if (c.Task != null) m[$"{Path.GetFileName(s.TaskFile)} accuracy"] = c.Task.Accuracy;
            m["seconds"] = c.Seconds;
            models[OracleName(c.Name)] = m;
        }
        return new JsonObject { ["context"] = s.Context, ["stride"] = s.Stride, ["device"] = s.Device.ToString(), ["models"] = models };
    }
}
