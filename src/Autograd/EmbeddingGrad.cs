using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Autograd;

/// <summary>
/// Backward of the token embedding lookup y[n, :] = table[ids[n], :] (forward: <see cref="Embedding"/>): the
/// lookup copies, so its gradient scatters back, dTable[ids[n], :] += dy[n, :], summed over the tokens that share
/// an id (torch's embedding_backward, dense). dTable is added to, so a tied head (embed_tokens = lm_head) can sum
/// both of its uses. Scale distillation never trains the table (arXiv 2402.10193 §3.2); this completes the
/// backward of every forward op.
/// </summary>
public static class EmbeddingGrad
{
    /// <summary>The spec: per touched row, what dTable holds plus every dy row of that id, summed in f64 in token
    /// order and rounded once. ids I32 [N], dy f32 [N, dim], dTable f32 [vocab, dim].</summary>
    public static void Twin(ReadOnlySpan<int> ids, ReadOnlySpan<float> dy, Span<float> dTable, int dim)
    {
        var tokensOf = new Dictionary<int, List<int>>();
        for (int n = 0; n < ids.Length; n++)
        {
            if (!tokensOf.TryGetValue(ids[n], out var list)) tokensOf[ids[n]] = list = [];
            list.Add(n);
        }
        foreach (var (id, tokens) in tokensOf)
            for (int c = 0; c < dim; c++)
            {
                double s = dTable[id * dim + c];
                foreach (int n in tokens) s += dy[n * dim + c];
                dTable[id * dim + c] = (float)s;
            }
    }

    /// <summary>One thread per element of dy, a float atomic add into its row of dTable: rows of repeated ids meet
    /// there, and the order in which their adds land varies from run to run, so the result may differ in the last
    /// bits between runs (acceptable here: the table is not trained in scale distillation, and a sort by id would
    /// cost more than the op). An id outside [0, vocab) adds nothing on a device.</summary>
    static void Kernel(Index1D i, ArrayView<int> ids, ArrayView<float> dy, ArrayView<float> dTable, int dim, int vocab)
    {
        int n = i / dim, c = i - n * dim;
        int id = ids[n];
        if ((uint)id < (uint)vocab) Atomic.Add(ref dTable[(long)id * dim + c], dy[i]);
    }

    public static void Run(Tensor ids, Tensor dy, Tensor dTable)
    {
        Need.SameDevice(ids, dy, dTable);
        if (ids.DType != DType.I32 || ids.Rank != 1) throw new ArgumentException($"embedding backward ids: expected I32 [N], got {ids}");
        Need.F32("embedding backward dy", dy);
        Need.F32("embedding backward dtable", dTable);
        if (dTable.Rank != 2) throw new ArgumentException($"embedding backward dtable: expected [vocab, dim], got {dTable}");
        int vocab = dTable.Dim(0), dim = dTable.Dim(1), tokens = ids.Dim(0);
        Need.Shape("embedding backward dy", dy, tokens, dim);
        Need.Disjoint("embedding backward", dy, dTable);
        if (dy.ElementCount == 0) return;
        if (!dTable.Device.IsIlgpu)
        {
            var h = ids.Host<int>();
            foreach (var id in h)
                if ((uint)id >= (uint)vocab) throw new ArgumentException($"embedding backward: token id {id} outside the vocabulary [0, {vocab})");
            Twin(h, dy.Host<float>(), dTable.Host<float>(), dim);
            return;
        }
        dTable.Device.Kernel<Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>>(Kernel)(
            (int)dy.ElementCount, ids.View<int>(), dy.View<float>(), dTable.View<float>(), dim, vocab);
    }
}
