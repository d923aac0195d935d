using System.Globalization;
using System.Text;

namespace BitDeltaNative.Serving;

/// <summary>
/// The server's counters, gauges and histograms, written in Prometheus' text exposition format (version 0.0.4:
/// HELP and TYPE lines, then samples; histograms as cumulative <c>_bucket{le=…}</c>, <c>_sum</c>, <c>_count</c>).
/// The scheduler's thread writes, scrapes read; one lock keeps a scrape consistent.
/// </summary>
public sealed class ServeMetrics
{
    static readonly double[] RowBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
    static readonly double[] SecondBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    readonly Lock gate = new();
    readonly Dictionary<FinishReason, long> finished = [];
    readonly Dictionary<string, long> tokensByModel = new(StringComparer.Ordinal);
    readonly Histogram rowsPerStep = new(RowBuckets), sequencesPerStep = new(RowBuckets), stepSeconds = new(SecondBuckets), ttft = new(SecondBuckets);
    long rejected, promptTokens, steps, prefillTokens, swapIns, evictions;
    double swapSeconds;
    int queueDepth, runningSequences;
    MemoryReport? memory;

    public void Rejected() { lock (gate) rejected++; }

    public void Finished(FinishReason reason, int prompt = 0)
    {
        lock (gate)
        {
            finished[reason] = finished.GetValueOrDefault(reason) + 1;
            promptTokens += prompt;
        }
    }

    public void Tokens(string model, int n) { lock (gate) tokensByModel[model] = tokensByModel.GetValueOrDefault(model) + n; }

    public void FirstToken(double seconds) { lock (gate) ttft.Add(seconds); }

    public void Gauges(int queue, int running) { lock (gate) (queueDepth, runningSequences) = (queue, running); }

    public void Step(int rows, int sequences, int prefill, double seconds)
    {
        lock (gate)
        {
            steps++;
            prefillTokens += prefill;
            rowsPerStep.Add(rows);
            sequencesPerStep.Add(sequences);
            stepSeconds.Add(seconds);
        }
    }

    public void Swaps(int ins, int evicted, double seconds) { lock (gate) (swapIns, evictions, swapSeconds) = (ins, evicted, seconds); }

    public void Residency(MemoryReport report) { lock (gate) memory = report; }

    public long Steps { get { lock (gate) return steps; } }

    public long GeneratedTokens { get { lock (gate) return tokensByModel.Values.Sum(); } }

    public long FinishedCount(FinishReason reason) { lock (gate) return finished.GetValueOrDefault(reason); }

    public string Render()
    {
        var sb = new StringBuilder();
        lock (gate)
        {
            Head(sb, "bitdelta_requests_total", "counter", "requests finished, by finish reason");
            foreach (var r in Enum.GetValues<FinishReason>())
                Sample(sb, "bitdelta_requests_total", finished.GetValueOrDefault(r), ("reason", r.ToString().ToLowerInvariant()));
            Scalar(sb, "bitdelta_requests_rejected_total", "counter", "requests refused because the queue was full (HTTP 429)", rejected);
            Scalar(sb, "bitdelta_prompt_tokens_total", "counter", "prompt tokens of finished requests", promptTokens);
            Head(sb, "bitdelta_generation_tokens_total", "counter", "tokens generated, by model (tenant or base)");
            foreach (var (m, n) in tokensByModel.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                Sample(sb, "bitdelta_generation_tokens_total", n, ("model", m));
            Scalar(sb, "bitdelta_queue_depth", "gauge", "requests waiting for a batch slot", queueDepth);
            Scalar(sb, "bitdelta_running_sequences", "gauge", "sequences in the running batch", runningSequences);
            Scalar(sb, "bitdelta_steps_total", "counter", "forward steps run", steps);
            Scalar(sb, "bitdelta_prefill_tokens_total", "counter", "prompt tokens fed through forward steps", prefillTokens);
            rowsPerStep.Write(sb, "bitdelta_batch_rows", "tokens per forward step (prompt chunks and decode tokens)");
            sequencesPerStep.Write(sb, "bitdelta_batch_sequences", "sequences that got a new token per step");
            stepSeconds.Write(sb, "bitdelta_step_seconds", "time of one scheduler step (forward and sampling)");
            ttft.Write(sb, "bitdelta_time_to_first_token_seconds", "from submission to the first token");
            Scalar(sb, "bitdelta_delta_swap_ins_total", "counter", "deltas loaded from disk on demand", swapIns);
            Scalar(sb, "bitdelta_delta_swap_in_seconds_total", "counter", "time spent loading deltas on demand", swapSeconds);
            Scalar(sb, "bitdelta_delta_evictions_total", "counter", "idle deltas evicted to make room (least recently used first)", evictions);
            if (memory != null)
            {
                Head(sb, "bitdelta_gpu_memory_bytes", "gauge", "device memory held, by part");
                Sample(sb, "bitdelta_gpu_memory_bytes", memory.BaseBytes, ("part", "base"));
                Sample(sb, "bitdelta_gpu_memory_bytes", memory.PoolBytes, ("part", "delta_pool"));
                Sample(sb, "bitdelta_gpu_memory_bytes", memory.KvCacheBytes, ("part", "kv_cache"));
                Head(sb, "bitdelta_tenant_memory_bytes", "gauge", "device memory of each resident tenant (signs, scales, norms, whole tensors)");
                foreach (var (t, b) in memory.Deltas.OrderBy(d => d.Tenant, StringComparer.Ordinal))
                    Sample(sb, "bitdelta_tenant_memory_bytes", b, ("model", t));
            }
        }
        return sb.ToString();
    }

    static void Head(StringBuilder sb, string name, string type, string help) =>
        sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n').Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    /// <summary>A metric of one unlabelled sample.</summary>
    static void Scalar(StringBuilder sb, string name, string type, string help, double value)
    {
        Head(sb, name, type, help);
        Sample(sb, name, value);
    }

    static void Sample(StringBuilder sb, string name, double value, params (string Key, string Value)[] labels)
    {
        sb.Append(name);
        if (labels.Length > 0)
            sb.Append('{').AppendJoin(',', labels.Select(l => $"{l.Key}=\"{Escape(l.Value)}\"")).Append('}');
        sb.Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
    }

    static string Escape(string s) => s.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    sealed class Histogram(double[] bounds)
    {
        readonly long[] counts = new long[bounds.Length];
        long count;
        double sum;

        public void Add(double v)
        {
            for (int i = 0; i < bounds.Length; i++)
                if (v <= bounds[i]) counts[i]++;
            count++;
            sum += v;
        }

        public void Write(StringBuilder sb, string name, string help)
        {
            Head(sb, name, "histogram", help);
            for (int i = 0; i < bounds.Length; i++)
                Sample(sb, name + "_bucket", counts[i], ("le", bounds[i].ToString("R", CultureInfo.InvariantCulture)));
            Sample(sb, name + "_bucket", count, ("le", "+Inf"));
            Sample(sb, name + "_sum", sum);
            Sample(sb, name + "_count", count);
        }
    }
}
