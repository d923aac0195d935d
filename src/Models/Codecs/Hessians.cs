namespace BitDeltaNative.Models.Codecs;

/// <summary>
/// The calibration statistics GPTQ and SparseGPT quantize against: for every decoder linear, H = Σ x·xᵀ over its inputs x
/// on calibration text, run through the fine-tune (the model the compressed one must imitate). q, k and v share one
/// input, as gate and up do, so a layer has four: keyed by the first linear of each (<see cref="InputOf"/>). The
/// references re-run each layer on the inputs that the layers compressed before it produce (GPTQ's sequential mode);
/// here one pass of the fine-tune gives them all, which costs the later layers a little accuracy and saves a pass per
/// layer.
/// </summary>
public static class Hessians
{
    /// <summary>The linear whose Hessian linear <paramref name="linear"/> (index in <see cref="LayerWeights.LinearNames"/>)
    /// shares: q for k and v, gate for up.</summary>
    public static int InputOf(int linear) => linear switch { 1 or 2 => 0, 5 => 4, _ => linear };

    /// <summary>Runs <paramref name="samples"/> windows of <paramref name="seqLen"/> tokens of the stream (consecutive, as
    /// distillation takes them) through <paramref name="model"/>, 4 at a time, and sums each linear input's x·xᵀ in f64.</summary>
    public static Dictionary<(int Layer, int Linear), double[]> Collect(LlamaModel model, int[] stream, int samples, int seqLen,
                                                                       IProgress<(int Done, int Total)>? progress = null)
    {
        int available = Calibration.Samples(stream.Length, seqLen);
        if (available == 0) throw new BitDeltaException($"the calibration text is {stream.Length} tokens, shorter than one sample of {seqLen}");
        samples = Math.Min(samples, available);
        const int batch = 4;
        var h = new Dictionary<(int, int), double[]>();
        model.LinearInputs = (layer, linear, x) =>
        {
            if (InputOf(linear) != linear) return;
            int n = x.Dim(-1), tokens = (int)(x.ElementCount / n);
            if (!h.TryGetValue((layer, linear), out var sum)) h[(layer, linear)] = sum = new double[(long)n * n];
            // xᵀ·x of the batch as a matmul where x is (the GPU's tensor-core or FMA GEMM, the host's SIMD one): xᵀ [n, tokens]
            // times itself transposed; each batch's f32 sums go into the f64 total.
            var dev = x.Device;
            using var x2 = x.Reshape(tokens, n);
            using var xt = Tensor.Empty([n, tokens], DType.F32, dev);
            using var hb = Tensor.Empty([n, n], DType.F32, dev);
            Kernels.Transpose.Run(x2, xt);
            Kernels.MatMul.Run(xt, xt, hb);
            var part = hb.ToFloatArray();
            for (long i = 0; i < part.Length; i++) sum[i] += part[i];
        };
        try
        {
            using var logits = Tensor.Empty([0, model.Config.VocabSize], DType.F32, model.Device);
            for (int first = 0; first < samples; first += batch)
            {
                int b = Math.Min(batch, samples - first);
                var ids = new int[b * seqLen];
                for (int r = 0; r < b; r++) Array.Copy(stream, (long)(first + r) * seqLen, ids, (long)r * seqLen, seqLen);
                var (slots, positions) = Calibration.SlotsAndPositions(ids.Length, seqLen);
                using var cache = model.NewCache(b, seqLen);
                model.Forward(ids, slots, positions, [], cache, logits);
                progress?.Report((first + b, samples));
            }
        }
        finally
        {
            model.LinearInputs = null;
        }
        return h;
    }
}
