using System.Diagnostics;
using BitDeltaNative.Models;

namespace BitDeltaNative.Serving;

/// <summary>
/// The tenants a server knows (name → delta file) against the few its engine's pool holds at once. A request for a
/// tenant that is not resident loads it from disk into a free slot; when there is none, or when the pool would pass
/// its byte budget (the whole embeddings and heads some deltas store count too), the least recently used tenant that
/// no running sequence needs is evicted first: what DeltaZip does by swapping deltas (arXiv 2312.05215 §4). Swap-ins
/// are timed. Used by the scheduler's thread only.
/// </summary>
public sealed class TenantCache
{
    readonly Engine engine;
    readonly Dictionary<string, string> files = new(StringComparer.Ordinal);
    readonly Dictionary<string, ulong> randomSeeds = new(StringComparer.Ordinal);
    readonly Dictionary<string, long> wholeBytes = new(StringComparer.Ordinal);
    readonly Dictionary<string, int> users = new(StringComparer.Ordinal);
    readonly Dictionary<string, long> lastUsed = new(StringComparer.Ordinal);
    long clock;

    /// <summary>Device bytes the pool may hold: signs of every slot, scales, norm tables and whole tensors.</summary>
    public long PoolBudget { get; }
    public int SwapIns { get; private set; }
    public int Evictions { get; private set; }
    public double SwapInSeconds { get; private set; }
    public double LastSwapInMs { get; private set; }

    /// <summary>Registers <paramref name="deltas"/>, each checked against the engine's base now (header only), so a
    /// bad file fails at start-up, not at its first request.</summary>
    public TenantCache(Engine engine, IEnumerable<(string Name, string Path)> deltas, long poolBudget = long.MaxValue)
    {
        this.engine = engine;
        PoolBudget = poolBudget;
        foreach (var (name, path) in deltas)
        {
            Engine.CheckName(name);
            if (files.ContainsKey(name)) throw new BitDeltaException($"tenant '{name}' is given twice");
            wholeBytes[name] = engine.CheckDelta(path);
            files[name] = path;
            users[name] = 0;
        }
        if (engine.Pool.ByteLength > poolBudget)
            throw new BitDeltaException($"the delta pool alone ({engine.Pool.ByteLength / 1e9:F2} GB) is over its budget of {poolBudget / 1e9:F2} GB");
    }

    /// <summary>Registers a tenant of random signs (<see cref="Engine.AddRandom"/>): benchmarks at real shapes without files.</summary>
    public void AddRandom(string name, ulong seed)
    {
        Engine.CheckName(name);
        if (files.ContainsKey(name)) throw new BitDeltaException($"tenant '{name}' is given twice");
        files[name] = "(random)";
        randomSeeds[name] = seed;
        wholeBytes[name] = 0;
        users[name] = 0;
    }

    /// <summary>
    /// How many tenants to hold at once, and the pool's byte budget, from a device budget (null: no limit) less the base
    /// and the KV cache. Every slot reserves <paramref name="slotBytes"/> of signs up front, and a resident tenant adds
    /// what its file stores whole (<paramref name="wholeBytes"/>, one per tenant): the plan takes as many slots as hold
    /// that many of the largest tenants at once, at most <paramref name="resident"/> (when given) and at most the
    /// tenants there are, at least one. A budget that cannot hold the base, the cache and the largest delta is an error
    /// that says what to lower.
    /// </summary>
    public static (int Resident, long PoolBudget) Plan(long? budget, long baseBytes, long kvBytes, long slotBytes, IReadOnlyList<long> wholeBytes, int? resident)
    {
        int tenants = wholeBytes.Count;
        if (resident is < 1) throw new BitDeltaException($"--resident must be at least 1, got {resident}");
        int most = Math.Max(1, Math.Min(resident ?? tenants, tenants));
        if (budget is not { } b) return (most, long.MaxValue);
        long pool = b - baseBytes - kvBytes;
        var largest = wholeBytes.OrderDescending().ToList();
        int n = 0;
        for (long used = 0; n < Math.Max(1, tenants) && n < most; n++)
        {
            used += slotBytes + (n < largest.Count ? largest[n] : 0);
            if (used > pool) break;
        }
        if (pool < 0 || (tenants > 0 && n == 0))
            throw new BitDeltaException($"--gpu-memory: {b / 1e9:F2} GB does not hold the base ({baseBytes / 1e9:F2} GB), the KV cache ({kvBytes / 1e9:F2} GB)" +
                                        (tenants > 0 ? $" and the largest delta ({(slotBytes + largest[0]) / 1e9:F3} GB)" : "") + "; lower --max-batch or --context, or raise the budget");
        return (Math.Max(1, n), pool);
    }

    /// <summary>Every tenant name, resident or not (without the base).</summary>
    public IReadOnlyCollection<string> Names => files.Keys;

    public bool Knows(string model) => model == Engine.BaseName || files.ContainsKey(model);

    public bool IsResident(string name) => engine.Pool.SlotOf(name) != null;

    /// <summary>Running sequences of tenant <paramref name="name"/>.</summary>
    public int Users(string name) => users.GetValueOrDefault(name);

    /// <summary>
    /// The pool slot for one more sequence of <paramref name="model"/> (−1 for the base), loading the tenant if it is not
    /// resident. Null when it cannot be made resident now: every slot holds a tenant some running sequence needs, so
    /// the request waits until one finishes.
    /// </summary>
    public int? Acquire(string model)
    {
        if (model == Engine.BaseName) return -1;
        if (!files.TryGetValue(model, out var path)) throw new BitDeltaException($"unknown tenant '{model}'");
        int? slot = engine.Pool.SlotOf(model);
        if (slot == null)
        {
            if (!MakeRoom(wholeBytes[model])) return null;
            var sw = Stopwatch.StartNew();
            slot = randomSeeds.TryGetValue(model, out ulong seed) ? engine.AddRandom(model, seed) : engine.AddDelta(model, path);
            LastSwapInMs = sw.Elapsed.TotalMilliseconds;
            SwapInSeconds += sw.Elapsed.TotalSeconds;
            SwapIns++;
        }
        users[model]++;
        lastUsed[model] = ++clock;
        return slot;
    }

    /// <summary>A sequence of <paramref name="model"/> is done; the tenant stays resident until evicted.</summary>
    public void Release(string model)
    {
        if (model == Engine.BaseName) return;
        if (users[model] <= 0) throw new InvalidOperationException($"tenant '{model}' released more often than acquired");
        users[model]--;
        lastUsed[model] = ++clock;
    }

    /// <summary>Evicts idle tenants, least recently used first, until a slot is free and <paramref name="adding"/>
    /// more whole bytes fit the budget. False (nothing evicted) when the idle ones cannot make that room.</summary>
    bool MakeRoom(long adding)
    {
        var pool = engine.Pool;
        var idle = files.Keys.Where(n => pool.SlotOf(n) != null && users[n] == 0).OrderBy(n => lastUsed.GetValueOrDefault(n)).ToList();
        long bytes = pool.ByteLength + adding;
        bool free = pool.FreeSlot != null;
        int take = 0;
        while ((!free || bytes > PoolBudget) && take < idle.Count)
        {
            bytes -= pool.WholeBytes(pool.SlotOf(idle[take])!.Value);
            free = true;
            take++;
        }
        if (!free || bytes > PoolBudget) return false;
        for (int i = 0; i < take; i++)
        {
            engine.RemoveDelta(idle[i]);
            Evictions++;
        }
        return true;
    }
}
