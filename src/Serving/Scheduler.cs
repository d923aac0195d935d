using System.Diagnostics;
using System.Threading.Channels;
using BitDeltaNative.Kernels;
using BitDeltaNative.Models;

namespace BitDeltaNative.Serving;

/// <summary>What a client asked for: a tenant (or the base), prompt tokens, and how to generate.</summary>
/// <param name="IgnoreEos">generate past end-of-sequence up to <paramref name="MaxTokens"/> (vLLM's ignore_eos; load tests)</param>
public sealed record CompletionRequest(string Model, int[] Prompt, int MaxTokens, SamplingOptions Sampling, IReadOnlyList<string> Stop, bool IgnoreEos = false);

public enum FinishReason { Stop, Length, Cancelled, Error }

/// <summary>One event of a request's stream: text (may be empty), and at the end the finish reason, token counts and,
/// for <see cref="FinishReason.Error"/>, the message.</summary>
public readonly record struct CompletionEvent(string Text, FinishReason? Finish = null, int PromptTokens = 0, int CompletionTokens = 0, string? Error = null);

/// <summary>A submitted request: its events arrive on <see cref="Events"/> as the scheduler produces them.</summary>
public sealed class Completion
{
    internal readonly Channel<CompletionEvent> Channel = System.Threading.Channels.Channel.CreateUnbounded<CompletionEvent>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    public CompletionRequest Request { get; }
    public CancellationToken Cancellation { get; }
    public long Submitted { get; } = Stopwatch.GetTimestamp();
    /// <summary>Seconds from submission to the first token, once there is one.</summary>
    public double? TimeToFirstToken { get; internal set; }
    public ChannelReader<CompletionEvent> Events => Channel.Reader;

    internal Completion(CompletionRequest request, CancellationToken cancellation)
    {
        Request = request;
        Cancellation = cancellation;
    }
}

public sealed record SchedulerOptions(int MaxBatch = 16, int Context = 2048, int MaxQueue = 256, int PrefillChunk = 512, DType? KvDType = null)
{
    /// <summary>The KV cache's dtype for a model where it runs: its weights' half precision on an ILGPU device (half the
    /// bytes a sequence holds), f32 on the managed CPU path.</summary>
    public static DType KvTypeFor(LlamaModel model)
    {
        var w = model.Weights.Layers[0].Linears.First().Weight.DType;
        return w is DType.F16 or DType.BF16 && model.Device.IsIlgpu ? w : DType.F32;
    }
}

/// <summary>The request queue is full: the server answers 429.</summary>
public sealed class QueueFullException(int limit) : Exception($"the server has {limit} requests waiting; try again later");

/// <summary>
/// Continuous batching over one <see cref="Engine"/> (Orca, OSDI '22: iteration-level scheduling). One thread runs
/// steps; each step admits waiting requests into free KV-cache slots (loading their tenants through the
/// <see cref="TenantCache"/>), feeds every running sequence (a chunk of its prompt, or its last token) through one
/// multi-tenant forward pass, samples each sequence's next token with its own settings, streams the text, and retires
/// finished and cancelled sequences at once, freeing their slots. Clients read their events from unbounded channels,
/// so a slow reader never stalls the step. A sequence's sampling draws depend on (seed, token index) only, so its text
/// does not depend on its batch mates: greedy output equals the tenant run alone.
/// </summary>
public sealed class Scheduler : IDisposable
{
    readonly Engine engine;
    readonly TenantCache tenants;
    readonly Tokenizer tokenizer;
    readonly HashSet<int> eos;
    readonly Channel<Completion> incoming = Channel.CreateUnbounded<Completion>(new UnboundedChannelOptions { SingleReader = true });
    readonly List<Completion> waiting = [];
    readonly List<Sequence> running = [];
    readonly Stack<int> freeSlots = new();
    readonly CancellationTokenSource stop = new();
    readonly KvCacheMemory cache;
    readonly Thread thread;
    int queued;

    public SchedulerOptions Options { get; }
    public ServeMetrics Metrics { get; } = new();
    public long KvCacheBytes => cache.ByteLength;
    /// <summary>Requests submitted and not yet running.</summary>
    public int Queued => Volatile.Read(ref queued);
    public int Running { get; private set; }

    public Scheduler(Engine engine, TenantCache tenants, Tokenizer tokenizer, SchedulerOptions options)
    {
        if (options.MaxBatch < 1) throw new BitDeltaException($"--max-batch must be at least 1, got {options.MaxBatch}");
        if (options.Context < 2 || options.Context > engine.Model.MaxPositions)
            throw new BitDeltaException($"--context must be in 2 … {engine.Model.MaxPositions} (the model's positions), got {options.Context}");
        if (options.PrefillChunk < 1) throw new BitDeltaException($"--prefill-chunk must be at least 1, got {options.PrefillChunk}");
        this.engine = engine;
        this.tenants = tenants;
        this.tokenizer = tokenizer;
        Options = options;
        eos = [.. tokenizer.EosIds];
        cache = engine.Model.NewCache(options.MaxBatch, options.Context, options.KvDType);
        for (int s = options.MaxBatch - 1; s >= 0; s--) freeSlots.Push(s);
        thread = new Thread(Loop) { IsBackground = true, Name = "bitdelta-scheduler" };
    }

    public void Start() => thread.Start();

    /// <summary>Queues a request; its events follow on <see cref="Completion.Events"/>. The caller has checked the
    /// model, and that prompt plus max tokens fit the context.</summary>
    public Completion Submit(CompletionRequest request, CancellationToken cancellation = default)
    {
        if (Interlocked.Increment(ref queued) > Options.MaxQueue)
        {
            Interlocked.Decrement(ref queued);
            Metrics.Rejected();
            throw new QueueFullException(Options.MaxQueue);
        }
        var c = new Completion(request, cancellation);
        if (stop.IsCancellationRequested)
        {
            // Stopping: answer at once rather than queue where nothing will run.
            Interlocked.Decrement(ref queued);
            End(c, FinishReason.Cancelled);
            return c;
        }
        incoming.Writer.TryWrite(c);
        return c;
    }

    sealed class Sequence(Completion c, int kvSlot, int tenant, StreamDecoder decoder)
    {
        public readonly Completion C = c;
        public readonly int KvSlot = kvSlot, Tenant = tenant;
        public readonly StreamDecoder Decoder = decoder;
        public readonly StopText Stop = new(c.Request.Stop);
        public readonly List<int> Output = [];
        public int Fed;
        public int[] Prompt => C.Request.Prompt;
    }

    void Loop()
    {
        engine.Model.Device.BindThread();
        while (!stop.IsCancellationRequested)
        {
            while (incoming.Reader.TryRead(out var c)) waiting.Add(c);
            DropCancelled();
            Admit();
            Running = running.Count;
            Metrics.Gauges(waiting.Count, running.Count);
            if (running.Count == 0)
            {
                // Nothing to run: wait for a request (or for a cancelled waiting one to be dropped).
                try { incoming.Reader.WaitToReadAsync(stop.Token).AsTask().Wait(waiting.Count > 0 ? 50 : Timeout.Infinite); }
                catch (AggregateException) { }
                continue;
            }
            try { Step(); }
            catch (Exception e)
            {
                // A failed step fails the sequences in it, not the server.
                string message = e is BitDeltaException ? e.Message : $"{e.GetType().Name}: {e.Message}";
                foreach (var s in running.ToList()) Finish(s, FinishReason.Error, message);
            }
        }
        foreach (var s in running.ToList()) Finish(s, FinishReason.Cancelled);
        EndQueued();
    }

    /// <summary>Ends a request that never ran: its one last event, then its channel closes.</summary>
    static void End(Completion c, FinishReason reason, string? error = null)
    {
        c.Channel.Writer.TryWrite(new CompletionEvent("", reason, c.Request.Prompt.Length, 0, error));
        c.Channel.Writer.TryComplete();
    }

    /// <summary>On stopping: every request still queued ends as cancelled.</summary>
    void EndQueued()
    {
        while (incoming.Reader.TryRead(out var c)) waiting.Add(c);
        foreach (var c in waiting) End(c, FinishReason.Cancelled);
        waiting.Clear();
    }

    /// <summary>Takes waiting request <paramref name="i"/> out of the queue.</summary>
    Completion Unqueue(int i)
    {
        var c = waiting[i];
        waiting.RemoveAt(i);
        Interlocked.Decrement(ref queued);
        return c;
    }

    void DropCancelled()
    {
        for (int i = waiting.Count - 1; i >= 0; i--)
            if (waiting[i].Cancellation.IsCancellationRequested)
            {
                End(Unqueue(i), FinishReason.Cancelled);
                Metrics.Finished(FinishReason.Cancelled);
            }
        foreach (var s in running.Where(s => s.C.Cancellation.IsCancellationRequested).ToList()) Finish(s, FinishReason.Cancelled);
    }

    /// <summary>First come, first served into free slots. A request whose tenant cannot be made resident yet (every
    /// slot's tenant has running sequences) waits, and holds back the tenant requests behind it until it is in.</summary>
    void Admit()
    {
        bool blocked = false;
        for (int i = 0; i < waiting.Count && freeSlots.Count > 0;)
        {
            var c = waiting[i];
            // Behind a request that waits for its tenant to swap in, only base requests go ahead: admitting more of a
            // resident tenant would keep it busy, and the waiting one could starve.
            if (blocked && c.Request.Model != Engine.BaseName) { i++; continue; }
            int? tenant;
            try { tenant = tenants.Acquire(c.Request.Model); }
            catch (Exception e)
            {
                End(Unqueue(i), FinishReason.Error, e.Message);
                Metrics.Finished(FinishReason.Error);
                continue;
            }
            if (tenant == null && running.Count == 0)
            {
                // Nothing runs that could free room: this tenant cannot fit the budget at all.
                End(Unqueue(i), FinishReason.Error, $"tenant '{c.Request.Model}' does not fit the delta pool's memory budget");
                Metrics.Finished(FinishReason.Error);
                continue;
            }
            if (tenant == null)
            {
                blocked = true;
                i++;
                continue;
            }
            Unqueue(i);
            running.Add(new Sequence(c, freeSlots.Pop(), tenant.Value, tokenizer.NewStreamDecoder()));
        }
        // What is resident changes only with a swap-in or an eviction.
        int changes = tenants.SwapIns + tenants.Evictions;
        if (changes != residencyChanges)
        {
            residencyChanges = changes;
            Metrics.Swaps(tenants.SwapIns, tenants.Evictions, tenants.SwapInSeconds);
            Metrics.Residency(engine.Memory(cache.ByteLength));
        }
    }

    int residencyChanges = -1;

    void Step()
    {
        var sw = Stopwatch.StartNew();
        // Rows: each sequence's next prompt chunk (within the step's prefill budget) or its last token. Sorted by tenant
        // (stably, so a sequence's tokens stay in position order) to make one run per tenant in every linear.
        var rows = new List<(int Id, int Slot, int Pos, int Tenant, Sequence Seq, bool Logit)>();
        int budget = Options.PrefillChunk, prefillTokens = 0;
        foreach (var s in running)
        {
            if (s.Fed < s.Prompt.Length)
            {
                if (budget == 0) continue;
                int n = Math.Min(budget, s.Prompt.Length - s.Fed);
                for (int k = 0; k < n; k++)
                    rows.Add((s.Prompt[s.Fed + k], s.KvSlot, s.Fed + k, s.Tenant, s, s.Fed + k == s.Prompt.Length - 1));
                s.Fed += n;
                budget -= n;
                prefillTokens += n;
            }
            else rows.Add((s.Output[^1], s.KvSlot, s.Prompt.Length + s.Output.Count - 1, s.Tenant, s, true));
        }
        var order = Enumerable.Range(0, rows.Count).OrderBy(r => rows[r].Tenant).ToArray();
        var sorted = order.Select(r => rows[r]).ToArray();
        // Logit rows grouped by sampling settings, so each group is one slice of the logits.
        var logitRows = Enumerable.Range(0, sorted.Length).Where(r => sorted[r].Logit)
            .OrderBy(r => sorted[r].Seq.C.Request.Sampling, SettingsOrder.Instance).ToArray();
        int vocab = engine.Model.Config.VocabSize;
        var dev = engine.Model.Device;
        var next = new int[logitRows.Length];
        using (var logits = Tensor.Empty([logitRows.Length, vocab], DType.F32, dev))
        {
            engine.Model.Forward(sorted.Select(r => r.Id).ToArray(), sorted.Select(r => r.Slot).ToArray(), sorted.Select(r => r.Pos).ToArray(),
                                 logitRows, cache, logits, engine.Pool, sorted.Select(r => r.Tenant).ToArray());
            for (int a = 0; a < logitRows.Length;)
            {
                var o = sorted[logitRows[a]].Seq.C.Request.Sampling;
                int b = a;
                while (b < logitRows.Length && SettingsOrder.Instance.Compare(sorted[logitRows[b]].Seq.C.Request.Sampling, o) == 0) b++;
                // Each sequence draws with its own seed at its own token index: u = Uniforms(seed, index, 1)[0], what
                // `bitdelta generate` draws for a single prompt.
                var u = Enumerable.Range(a, b - a).Select(i => sorted[logitRows[i]].Seq)
                    .Select(s => Sampling.Uniforms(s.C.Request.Sampling.Seed, s.Output.Count, 1)[0]).ToArray();
                using var lg = logits.Slice(a, b - a);
                using var tu = Tensor.From(u, [b - a], dev);
                using var tok = Tensor.Empty([b - a], DType.I32, dev);
                Sampling.Run(lg, o.Temperature, o.TopK, o.TopP, tu, tok);
                tok.ToArray<int>().CopyTo(next, a);
                a = b;
            }
        }
        for (int i = 0; i < logitRows.Length; i++) Accept(sorted[logitRows[i]].Seq, next[i]);
        Metrics.Step(rows.Count, logitRows.Length, prefillTokens, sw.Elapsed.TotalSeconds);
    }

    /// <summary>Orders sampling settings (seed excluded) so equal ones are adjacent.</summary>
    sealed class SettingsOrder : IComparer<SamplingOptions>
    {
        public static readonly SettingsOrder Instance = new();
        public int Compare(SamplingOptions? x, SamplingOptions? y)
        {
            int c = x!.Temperature.CompareTo(y!.Temperature);
            if (c == 0) c = x.TopK.CompareTo(y.TopK);
            if (c == 0) c = x.TopP.CompareTo(y.TopP);
            return c;
        }
    }

    void Accept(Sequence s, int token)
    {
        var c = s.C;
        if (c.TimeToFirstToken == null)
        {
            c.TimeToFirstToken = Stopwatch.GetElapsedTime(c.Submitted).TotalSeconds;
            Metrics.FirstToken(c.TimeToFirstToken.Value);
        }
        if (eos.Contains(token) && !c.Request.IgnoreEos)
        {
            Finish(s, FinishReason.Stop);
            return;
        }
        s.Output.Add(token);
        Metrics.Tokens(c.Request.Model, 1);
        var (text, stopped) = s.Stop.Push(s.Decoder.Add(token));
        if (text.Length > 0) c.Channel.Writer.TryWrite(new CompletionEvent(text));
        if (stopped) Finish(s, FinishReason.Stop, flush: false);
        else if (s.Output.Count >= c.Request.MaxTokens || s.Prompt.Length + s.Output.Count >= Options.Context) Finish(s, FinishReason.Length);
    }

    void Finish(Sequence s, FinishReason reason, string? error = null, bool flush = true)
    {
        var w = s.C.Channel.Writer;
        if (flush && reason is FinishReason.Stop or FinishReason.Length)
        {
            string tail = s.Stop.Flush() + s.Decoder.Finish();
            if (tail.Length > 0) w.TryWrite(new CompletionEvent(tail));
        }
        w.TryWrite(new CompletionEvent("", reason, s.Prompt.Length, s.Output.Count, error));
        w.TryComplete();
        running.Remove(s);
        freeSlots.Push(s.KvSlot);
        tenants.Release(s.C.Request.Model);
        Metrics.Finished(reason, s.Prompt.Length);
    }

    bool disposed;

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        stop.Cancel();
        if (thread.IsAlive) thread.Join();
        else EndQueued();   // never started
        cache.Dispose();
        stop.Dispose();
    }
}
