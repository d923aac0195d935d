using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace BitDeltaNative.Tests.Tensors;

public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("bitdelta-test-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}

public class SafetensorsTests
{
    static readonly DType[] Storable = [DType.F32, DType.F16, DType.BF16, DType.I32, DType.U8, DType.I64];

    static (string, Tensor) RandomTensor(Random rng, int i)
    {
        var dt = Storable[rng.Next(Storable.Length)];
        int rank = rng.Next(0, 4);
        var shape = Enumerable.Range(0, rank).Select(_ => rng.Next(0, 6) == 0 ? rng.Next(0, 2) : rng.Next(1, 40)).ToArray();
        var bytes = new byte[dt.ByteCount(shape)];
        rng.NextBytes(bytes);
        return ($"model.layers.{i}.w{rng.Next(1000)}", Tensor.FromHostMemory(bytes, shape, dt));
    }

    [Property(MaxTest = 40)]
    public void Write_then_read_round_trips(int seed)
    {
        var rng = new Random(seed);
        using var dir = new TempDir();
        var tensors = Enumerable.Range(0, rng.Next(0, 8)).Select(i => RandomTensor(rng, i)).ToList();
        var meta = new Dictionary<string, string> { ["format"] = "pt", ["note"] = $"seed {seed} ✓" };
        string path = dir.File("a.safetensors");
        SafetensorsWriter.Write(path, tensors, meta);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(meta, f.Metadata);
        Assert.Equal(0, f.DataStart % 8);
        Assert.Equal(tensors.Count, f.Entries.Count);
        foreach (var (name, t) in tensors)
        {
            var e = f.Entry(name);
            Assert.Equal(t.DType, e.DType);
            Assert.Equal(t.Shape.ToArray(), e.Shape);
            using var r = f.Get(name);
            Assert.Equal(t.HostBytes.ToArray(), r.HostBytes.ToArray());
        }
        Assert.Empty(Directory.GetFiles(dir.Path, ".*tmp*"));
    }

    [Fact]
    public void Packed_signs_are_stored_as_u32_words_readable_back_as_signs()
    {
        using var dir = new TempDir();
        using var s = Tensor.From(new uint[] { 0xDEADBEEF, 1, 2, 3, 4, 5 }, [3, 33]);
        SafetensorsWriter.Write(dir.File("s.safetensors"), [("signs", s)]);
        using var f = SafetensorsFile.Open(dir.File("s.safetensors"));
        Assert.Equal(DType.U32, f.Entry("signs").DType);
        Assert.Equal(new[] { 3, 2 }, f.Entry("signs").Shape);
        using var back = f.Get("signs", DType.Sign1, [3, 33]);
        Assert.Equal(s.ToArray<uint>(), back.ToArray<uint>());
    }

    [Fact]
    public void Writing_replaces_a_file_only_when_complete()
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        using var t = Tensor.From(new float[] { 1, 2 }, [2]);
        SafetensorsWriter.Write(path, [("a", t)]);
        var before = System.IO.File.ReadAllBytes(path);
        Assert.ThrowsAny<Exception>(() => SafetensorsWriter.Write(path, [("a", t), ("a", t)]));
        Assert.Equal(before, System.IO.File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    // ---- bad files: each is a one-line error naming the file (and the tensor where there is one) ----

    static byte[] Raw(string header, int dataBytes, long? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var b = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)(declaredLength ?? h.Length));
        h.CopyTo(b, 8);
        for (int i = 8 + h.Length; i < b.Length; i++) b[i] = (byte)(i * 31 + 7);
        return b;
    }

    static byte[] WithByte(byte[] b, byte from, byte to)
    {
        b[Array.IndexOf(b, from)] = to;
        return b;
    }

    public static TheoryData<string, byte[], string> BadFiles => new()
    {
        { "empty", [], "truncated" },
        { "short", [1, 2, 3], "truncated" },
        { "header past end", Raw("{}", 0, declaredLength: 1000), "runs past the end" },
        { "huge header", Raw("{}", 0, declaredLength: long.MaxValue), "runs past the end" },
        { "not json", Raw("{\"a\": [", 0), "not valid JSON" },
        { "not an object", Raw("[1,2]", 0), "does not start with '{'" },
        { "unknown dtype", Raw("{\"w\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4), "tensor 'w': unknown dtype 'F12'" },
        { "shape vs bytes", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "tensor 'w': shape [3] of F32 needs 12 bytes" },
        { "offsets past end", Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8), "tensor 'w': data_offsets [0, 16] run past the end" },
        { "negative offset", Raw("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}", 4), "tensor 'w': data_offsets" },
        { "overlap", Raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6), "overlap tensor" },
        { "hole", Raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}", 6), "tensor 'b': data_offsets start at 4, leaving a hole" },
        { "trailing", Raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 5), "trailing bytes" },
        { "truncated data", Raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 3), "tensor 'b': data_offsets [2, 4] run past the end" },
        { "duplicate", Raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4), "tensor 'a': name appears twice" },
        { "huge shape", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,4]}}", 4), "tensor 'a': shape" },
        { "shape not ints", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4), "tensor 'a': shape" },
        { "missing dtype", Raw("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "tensor 'a': missing dtype" },
        { "bad utf-8 name", WithByte(Raw("{\"a~\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0), (byte)'~', 0xFF), "not valid UTF-8" },
        { "metadata not strings", Raw("{\"__metadata__\":{\"x\":1}}", 0), "__metadata__ 'x'" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void Bad_files_give_a_one_line_error_naming_file_and_tensor(string label, byte[] bytes, string expected)
    {
        using var dir = new TempDir();
        string path = dir.File(label.Replace(' ', '_') + ".safetensors");
        System.IO.File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<BitDeltaException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Unsupported_but_valid_dtypes_are_parsed_from_headers()
    {
        using var dir = new TempDir();
        string path = dir.File("dt.safetensors");
        System.IO.File.WriteAllBytes(path, Raw("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[8,10]},\"c\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[10,12]}}", 12));
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(DType.I64, f.Entry("a").DType);
        Assert.Equal(DType.Bool, f.Entry("b").DType);
        Assert.Equal(DType.F8E4M3, f.Entry("c").DType);
    }

    /// <summary>Mutates valid files (bytes in the length, header and data; truncation; appended bytes) and
    /// checks that each outcome is either a read whose every tensor is exactly the bytes its header
    /// names, or the one-line error. Any other exception fails.</summary>
    [Property(MaxTest = 300)]
    public void Fuzzed_files_read_correctly_or_fail_clearly(int seed)
    {
        var rng = new Random(seed);
        using var dir = new TempDir();
        string path = dir.File("f.safetensors");
        var tensors = Enumerable.Range(0, rng.Next(1, 5)).Select(i => RandomTensor(rng, i)).ToList();
        SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["k"] = "v" });
        var bytes = System.IO.File.ReadAllBytes(path);
        int headerLen = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        switch (rng.Next(4))
        {
            case 0: bytes = bytes[..rng.Next(bytes.Length)]; break;
            case 1: bytes = [.. bytes, .. new byte[rng.Next(1, 9)]]; break;
            default:
                int flips = rng.Next(1, 4);
                for (int k = 0; k < flips; k++)
                {
                    int at = rng.Next(3) == 0 ? rng.Next(Math.Min(8, bytes.Length)) : 8 + rng.Next(Math.Max(1, Math.Min(headerLen, bytes.Length - 8)));
                    if (at < bytes.Length)
                        bytes[at] = rng.Next(2) == 0 ? (byte)rng.Next(256) : (byte)"0123456789[],:{}\"-"[rng.Next(18)];
                }
                break;
        }
        System.IO.File.WriteAllBytes(path, bytes);
        SafetensorsFile f;
        try { f = SafetensorsFile.Open(path); }
        catch (BitDeltaException e)
        {
            Assert.StartsWith(path + ": ", e.Message);
            Assert.DoesNotContain('\n', e.Message);
            return;
        }
        using (f)
        {
            // Independent check of a successful read: each tensor is the bytes its header entry names.
            int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            using var doc = JsonDocument.Parse(bytes.AsMemory(8, n));
            long covered = 0;
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "__metadata__") continue;
                long b = p.Value.GetProperty("data_offsets")[0].GetInt64(), en = p.Value.GetProperty("data_offsets")[1].GetInt64();
                covered += en - b;
                using var t = f.Get(p.Name);
                Assert.Equal(bytes.AsSpan(8 + n + (int)b, (int)(en - b)).ToArray(), t.HostBytes.ToArray());
            }
            Assert.Equal(bytes.Length - 8 - n, covered);
        }
    }

    [Fact]
    public void Opening_maps_the_file_and_copies_no_tensor_data()
    {
        using var dir = new TempDir();
        string path = dir.File("big.safetensors");
        var big = new byte[64 << 20];
        new Random(3).NextBytes(big);
        using (var t = Tensor.FromHostMemory(big, [big.Length / 2], DType.F16))
            SafetensorsWriter.Write(path, [("w", t)]);
        big = null!;
        GC.Collect();
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var f = SafetensorsFile.Open(path);
        using var w = f.Get("w");
        float sum = 0;
        var span = w.Host<ushort>();
        for (int i = 0; i < span.Length; i += 4096) sum += span[i];
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 1 << 20, $"opening a 64 MiB file allocated {allocated} managed bytes");
        Assert.True(sum > 0);
    }

    // ---- sharded checkpoints ----

    static void WriteSharded(TempDir dir, out Dictionary<string, float[]> values)
    {
        values = [];
        var rng = new Random(11);
        var map = new Dictionary<string, string>();
        for (int s = 0; s < 3; s++)
        {
            var list = new List<(string, Tensor)>();
            for (int i = 0; i < 3; i++)
            {
                string name = $"model.layers.{s * 3 + i}.mlp.up_proj.weight";
                var v = Enumerable.Range(0, 12).Select(_ => (float)rng.NextDouble()).ToArray();
                values[name] = v;
                list.Add((name, Tensor.From(v, [3, 4])));
                map[name] = $"model-0000{s + 1}-of-00003.safetensors";
            }
            SafetensorsWriter.Write(dir.File($"model-0000{s + 1}-of-00003.safetensors"), list);
        }
        System.IO.File.WriteAllText(dir.File("model.safetensors.index.json"),
            JsonSerializer.Serialize(new { metadata = new { total_size = 9 * 48 }, weight_map = map }));
    }

    [Fact]
    public void Sharded_checkpoint_finds_every_tensor_in_its_shard()
    {
        using var dir = new TempDir();
        WriteSharded(dir, out var values);
        using var ck = Checkpoint.Open(dir.Path);
        Assert.Equal(3, ck.Files.Count);
        Assert.Equal(values.Keys.Order(), ck.Names.Order());
        foreach (var (name, v) in values) Assert.Equal(v, ck.Get(name).ToFloatArray());
        var e = Assert.Throws<BitDeltaException>(() => ck.Get("lm_head.weight"));
        Assert.Contains("'lm_head.weight' is missing", e.Message);
    }

    [Theory]
    [InlineData("missing shard", "is missing")]
    [InlineData("wrong shard", "which does not hold it")]
    [InlineData("escape", "not a file in the model folder")]
    public void Bad_index_is_a_clear_error(string label, string expected)
    {
        using var dir = new TempDir();
        WriteSharded(dir, out _);
        string idx = dir.File("model.safetensors.index.json");
        string text = System.IO.File.ReadAllText(idx);
        text = label switch
        {
            "missing shard" => text.Replace("model-00003-of-00003", "model-00004-of-00003"),
            "wrong shard" => text.Replace("\"model.layers.0.mlp.up_proj.weight\":\"model-00001", "\"model.layers.0.mlp.up_proj.weight\":\"model-00002"),
            _ => text.Replace("model-00002-of-00003", "../model-00002-of-00003"),
        };
        System.IO.File.WriteAllText(idx, text);
        var e = Assert.Throws<BitDeltaException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains(expected, e.Message);
        Assert.Contains("model.safetensors.index.json", e.Message);
    }

    [Fact]
    public void Folder_without_weights_is_a_clear_error()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<BitDeltaException>(() => Checkpoint.Open(dir.Path));
        Assert.Contains("no model.safetensors", e.Message);
    }
}
