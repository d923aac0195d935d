using System.Text.RegularExpressions;
using BitDeltaNative.Models;

namespace BitDeltaNative.Serving;

/// <summary>Device memory of an engine, in bytes: the base's weights, each resident tenant's delta (signs, scales and
/// norm rows, plus any embedding or lm_head it stores whole), the pool as allocated (every slot's signs are reserved
/// up front), and the KV cache of the batch asked about.</summary>
public sealed record MemoryReport(long BaseBytes, IReadOnlyList<(string Tenant, long Bytes)> Deltas, long PoolBytes, long KvCacheBytes)
{
    public long Total => BaseBytes + PoolBytes + KvCacheBytes;

    public override string ToString() =>
        $"base {Size(BaseBytes)}, {Deltas.Count} delta(s) {Size(Deltas.Sum(d => d.Bytes))}" +
        (Deltas.Count > 0 ? $" ({Size((long)Deltas.Average(d => d.Bytes))} each)" : "") +
        $", delta pool as allocated {Size(PoolBytes)}, KV cache {Size(KvCacheBytes)}; total {Size(Total)}";

    static string Size(long bytes) => bytes >= 1_000_000_000 ? $"{bytes / 1e9:F2} GB" : $"{bytes / 1e6:F2} MB";
}

/// <summary>
/// One base model and many compressed fine-tunes (tenants) on one device: the base's weights once, each tenant as a
/// BitDelta delta in a <see cref="DeltaPool"/> slot, and generation where requests for different tenants (and for
/// the base) share every forward step. Delta files are checked against the base (config hash and weights
/// fingerprint) before anything is copied. The scheduler of <c>bitdelta serve</c> builds on this.
/// </summary>
public sealed partial class Engine : IDisposable
{
    /// <summary>The name that means "the base model, no delta" in requests.</summary>
    public const string BaseName = "base";

    public LlamaModel Model { get; }
    public DeltaPool Pool { get; }
    public string? BaseDir { get; }
    public GenerationStats? LastStats { get; private set; }
    public long LastKvCacheBytes { get; private set; }
    string? fingerprint;

    public Engine(LlamaModel model, int capacity, string? baseDir = null)
    {
        Model = model;
        BaseDir = baseDir;
        Pool = new DeltaPool(model.Weights, capacity, model.Device);
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex NamePattern();

    /// <summary>Checks a tenant name: letters, digits, '.', '_', '-', at most 64, not <see cref="BaseName"/>.</summary>
    public static void CheckName(string name)
    {
        if (!NamePattern().IsMatch(name))
            throw new BitDeltaException($"tenant name '{name}': use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)");
        if (name == BaseName) throw new BitDeltaException($"tenant name '{BaseName}' is reserved for the base model");
    }

    /// <summary>Loads a delta file as tenant <paramref name="name"/> after checking it was made from this base; returns its slot.</summary>
    public int AddDelta(string name, string path)
    {
        CheckName(name);
        using var file = OpenChecked(path);
        return Pool.Load(file, name);
    }

    /// <summary>Checks that a delta file was made from this base (its header and metadata only, nothing is loaded);
    /// returns the bytes it adds beyond a pool slot (<see cref="DeltaFile.ResidentBytes"/>).</summary>
    public long CheckDelta(string path)
    {
        using var file = OpenChecked(path);
        return file.ResidentBytes;
    }

    DeltaFile OpenChecked(string path)
    {
        if (BaseDir == null) throw new InvalidOperationException("an engine over an in-memory base cannot check delta files");
        var file = DeltaFile.Open(path);
        try
        {
            if (fingerprint == null)
                using (var ck = Checkpoint.Open(BaseDir))
                    fingerprint = WeightsFingerprint.Of(ck);
            file.CheckBase(BaseDir, Model.Config, fingerprint);
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>A tenant of random signs (benchmarks at real shapes without delta files).</summary>
    public int AddRandom(string name, ulong seed)
    {
        CheckName(name);
        return Pool.LoadRandom(name, seed);
    }

    public void RemoveDelta(string name)
    {
        if (name == BaseName) throw new BitDeltaException($"'{BaseName}' is the base model, not a tenant: it cannot be removed");
        Pool.Unload(SlotOf(name));
    }

    public IEnumerable<string> Tenants => Enumerable.Range(0, Pool.Capacity).Select(Pool.Name).OfType<string>();

    /// <summary>The pool slot of a tenant name, −1 for <see cref="BaseName"/> or null.</summary>
    public int SlotOf(string? name)
    {
        if (name == null || name == BaseName) return -1;
        return Pool.SlotOf(name) ?? throw new BitDeltaException(
            $"unknown tenant '{name}' (loaded: {string.Join(", ", Tenants.Prepend(BaseName))})");
    }

    public MemoryReport Memory(long kvCacheBytes = 0)
    {
        var deltas = Enumerable.Range(0, Pool.Capacity).Where(s => Pool.Name(s) != null)
            .Select(s => (Pool.Name(s)!, Pool.BytesPerSlot + Pool.WholeBytes(s))).ToList();
        return new MemoryReport(Model.Weights.ByteLength, deltas, Pool.ByteLength, kvCacheBytes);
    }

    /// <summary>
    /// Generates for every request in one batch: prefill of all prompts in one step, then one decode step for all
    /// unfinished requests per token, whatever their tenants. Greedy output of a request equals what its tenant gives
    /// alone. <paramref name="onToken"/> hears (request index, token); <paramref name="kvDType"/> as
    /// <see cref="Generator.KvDType"/>.
    /// </summary>
    public int[][] Generate(IReadOnlyList<(string? Tenant, int[] Prompt)> requests, int maxNewTokens, SamplingOptions options,
                            IReadOnlyCollection<int> eos, Action<int, int>? onToken = null, DType? kvDType = null)
    {
        var tenants = requests.Select(r => SlotOf(r.Tenant)).ToArray();
        var gen = new Generator(Model, pool: Pool) { KvDType = kvDType };
        var outputs = gen.Generate(requests.Select(r => r.Prompt).ToList(), maxNewTokens, options, eos, onToken, tenants);
        LastStats = gen.LastStats;
        LastKvCacheBytes = gen.LastKvCacheBytes;
        return outputs;
    }

    public void Dispose() => Pool.Dispose();
}
