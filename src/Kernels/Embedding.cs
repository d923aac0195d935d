using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Token embedding lookup (torch.nn.Embedding forward, Llama's embed_tokens): y[t, :] = table[ids[t], :]
/// as f32. ids I32 [T]; table [vocab, dim] in f16, bf16 or f32; y f32 [T, dim]. The widening is exact.
/// <para>Out-of-range ids: the op throws when ids are on the host; on a device (where checking would cost
/// a copy back and a sync) the kernel writes NaN for the whole row of an id outside [0, vocab), so a bad
/// id shows up downstream and never reads outside the table.</para>
/// </summary>
public static class Embedding
{
    public static void Twin(ReadOnlySpan<int> ids, ReadOnlySpan<float> table, Span<float> y, int dim)
    {
        for (int t = 0; t < ids.Length; t++)
            table.Slice(ids[t] * dim, dim).CopyTo(y.Slice(t * dim, dim));
    }

    const int Threads = 256;

    /// <summary>One thread per output element: a row of the table is contiguous, so a warp reads it coalesced. Grouped
    /// explicitly so that it is launched dependent (DependentLaunch.cs): a decode step's first and last gathers start
    /// while the kernel ahead finishes.</summary>
    static void Kernel(ArrayView<int> ids, ArrayView<ushort> table, int code, ArrayView<float> y, int dim, int vocab, int count)
    {
        GridDependency.Release();
        GridDependency.Wait();   // ids (sampled on the device) and y's rows may be the kernels' ahead
        int i = Grid.GlobalIndex.X;
        if (i >= count) return;
        int t = i / dim, c = i - t * dim;
        int id = ids[t];
        y[i] = (uint)id < (uint)vocab ? Elem.Load(table, (long)id * dim + c, code) : float.NaN;
    }

    public static void Run(Tensor ids, Tensor table, Tensor y)
    {
        Need.SameDevice(ids, table, y);
        if (ids.DType != DType.I32 || ids.Rank != 1) throw new ArgumentException($"embedding ids: expected I32 [T], got {ids}");
        Need.Float("embedding table", table);
        if (table.Rank != 2) throw new ArgumentException($"embedding table: expected [vocab, dim], got {table}");
        Need.F32("embedding y", y);
        int vocab = table.Dim(0), dim = table.Dim(1), tokens = ids.Dim(0);
        Need.Shape("embedding y", y, tokens, dim);
        if (y.ElementCount == 0) return;
        if (!y.Device.IsIlgpu)
        {
            var h = ids.Host<int>();
            foreach (var id in h)
                if ((uint)id >= (uint)vocab) throw new ArgumentException($"embedding: token id {id} outside the vocabulary [0, {vocab})");
            if (table.DType == DType.F32) Twin(h, table.Host<float>(), y.Host<float>(), dim);
            else
            {
                // Widen only the rows asked for: a 128K-row table need not be converted for a few tokens.
                int sz = table.DType.ElementSize();
                for (int t = 0; t < h.Length; t++)
                    Casts.ToF32(table.HostBytes.Slice(h[t] * dim * sz, dim * sz), table.DType, y.Host<float>().Slice(t * dim, dim));
            }
            return;
        }
        int n = (int)y.ElementCount;
        y.Device.GroupedKernel<Action<KernelConfig, ArrayView<int>, ArrayView<ushort>, int, ArrayView<float>, int, int, int>>(Kernel)(
            new KernelConfig((n + Threads - 1) / Threads, Threads), ids.View<int>(), Elem.View(table), Elem.Code(table.DType), y.View<float>(), dim, vocab, n);
    }

    /// <summary>A gather is exact: the kernel must equal the twin bit for bit (bound 0).</summary>
    public static AuditCase Case => new("embedding", 0, (dev, rng) =>
    {
        int vocab = Check.Size(rng, 300), dim = Check.Size(rng, 700), tokens = Check.Size(rng, 33);
        var dt = Check.FloatType(rng);
        var table = Check.Rounded(Check.Values(rng, (long)vocab * dim), dt);
        var ids = new int[tokens];
        for (int t = 0; t < tokens; t++) ids[t] = rng.Next(vocab);
        using var tt = Tensor.From(table, [vocab, dim], dev, dt);
        using var ti = Tensor.From(ids, [tokens], dev);
        using var ty = Check.Poisoned([tokens, dim], DType.F32, dev);
        Run(ti, tt, ty);
        var want = new float[(long)tokens * dim];
        Twin(ids, table, want, dim);
        return (Check.RelativeError(ty.ToFloatArray(), want), $"[{tokens}] of [{vocab}, {dim}] {dt}");
    });
}
