using System.Text.Json;

namespace BitDeltaNative;

/// <summary>
/// The weights of a Hugging Face model folder: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> (its <c>weight_map</c> names, for each tensor, the shard that holds
/// it), or a single .safetensors file given directly. Every shard is memory-mapped.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    readonly List<SafetensorsFile> files = [];
    readonly Dictionary<string, SafetensorsFile> where = [];
    public string Path { get; }
    public IReadOnlyList<SafetensorsFile> Files => files;
    public IEnumerable<string> Names => where.Keys;

    Checkpoint(string path) => Path = path;

    public static Checkpoint Open(string path)
    {
        var ck = new Checkpoint(path);
        try
        {
            if (System.IO.File.Exists(path)) ck.AddAll(path);
            else if (!Directory.Exists(path)) throw new BitDeltaException($"{path}: no such file or folder");
            else if (System.IO.File.Exists(System.IO.Path.Combine(path, "model.safetensors.index.json"))) ck.AddIndexed(System.IO.Path.Combine(path, "model.safetensors.index.json"));
            else if (System.IO.File.Exists(System.IO.Path.Combine(path, "model.safetensors"))) ck.AddAll(System.IO.Path.Combine(path, "model.safetensors"));
            else throw new BitDeltaException($"{path}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are read)");
            return ck;
        }
        catch { ck.Dispose(); throw; }
    }

    void AddAll(string file)
    {
        var f = SafetensorsFile.Open(file);
        files.Add(f);
        foreach (var e in f.Entries) where[e.Name] = f;
    }

    void AddIndexed(string indexPath)
    {
        string dir = System.IO.Path.GetDirectoryName(indexPath)!;
        Dictionary<string, string> map = [];
        try
        {
            using var doc = JsonDocument.Parse(System.IO.File.ReadAllBytes(indexPath));
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new BitDeltaException($"{indexPath}: no weight_map object");
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw new BitDeltaException($"{indexPath}: weight_map '{p.Name}' is not a file name");
                map[p.Name] = p.Value.GetString()!;
            }
        }
        catch (JsonException e) { throw new BitDeltaException($"{indexPath}: not valid JSON ({e.Message.ReplaceLineEndings(" ")})", e); }

        var shards = new Dictionary<string, SafetensorsFile>();
        foreach (var (name, shard) in map)
        {
            // A shard name is a plain file name beside the index: no folders, no way out of the model folder.
            if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or "..")
                throw new BitDeltaException($"{indexPath}: weight_map '{name}' names '{shard}', which is not a file in the model folder");
            if (!shards.TryGetValue(shard, out var f))
            {
                string p = System.IO.Path.Combine(dir, shard);
                if (!System.IO.File.Exists(p)) throw new BitDeltaException($"{indexPath}: shard '{shard}' (for tensor '{name}') is missing");
                shards[shard] = f = SafetensorsFile.Open(p);
                files.Add(f);
            }
            if (!f.Contains(name)) throw new BitDeltaException($"{indexPath}: tensor '{name}' is listed in shard '{shard}', which does not hold it");
            where[name] = f;
        }
    }

    public bool Contains(string name) => where.ContainsKey(name);

    public TensorEntry Entry(string name) => FileOf(name).Entry(name);

    public SafetensorsFile FileOf(string name) =>
        where.TryGetValue(name, out var f) ? f : throw new BitDeltaException($"{Path}: tensor '{name}' is missing");

    /// <summary>A host tensor over the mapped bytes (no copy).</summary>
    public Tensor Get(string name) => FileOf(name).Get(name);

    public ReadOnlySpan<byte> Bytes(string name) => FileOf(name).Bytes(name);

    public long TotalBytes => files.Sum(f => f.Entries.Sum(e => e.ByteLength));

    public void Dispose()
    {
        foreach (var f in files) f.Dispose();
        files.Clear();
    }
}
