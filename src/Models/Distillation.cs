using System.Diagnostics;
using BitDeltaNative.Autograd;
using BitDeltaNative.Kernels;

namespace BitDeltaNative.Models;

/// <summary>Hyper-parameters of scale distillation; the defaults are the and near the paper's (§4: 800
/// C4 samples of 128 tokens; here 200 steps × 4 samples = 800).</summary>
public sealed record DistillOptions
{
    public int Steps { get; init; } = 200;
    public int Batch { get; init; } = 4;
    public int SeqLen { get; init; } = 128;
    public double Lr { get; init; } = 1e-4;

    public void Validate()
    {
        if (Steps < 1) throw new BitDeltaException($"--steps must be positive for distillation, got {Steps}");
        if (Batch < 1) throw new BitDeltaException($"--batch must be positive, got {Batch}");
        if (SeqLen < 2) throw new BitDeltaException($"--seq-len must be at least 2, got {SeqLen}");
        if (!(Lr > 0) || double.IsInfinity(Lr)) throw new BitDeltaException($"--lr must be a positive number, got {Lr}");
    }
}

/// <summary>
/// Calibration samples: consecutive, non-overlapping windows of SeqLen tokens of one token stream (BOS, then the
/// text, as <c>eval</c> reads it). Step s uses samples s·B … s·B + B − 1, wrapping round to the first when the
/// stream has fewer. The reference (bitdelta/data.py) instead takes the first 128 tokens of each C4 document,
/// padded; packing uses every token and needs no padding mask. tools/oracle/distill_golden.py does the same.
/// </summary>
public static class Calibration
{
    public static int Samples(int streamLength, int seqLen) => streamLength / seqLen;

    /// <summary>For a batch of samples of <paramref name="seqLen"/> tokens one after another: each token's sequence
    /// (its cache slot) and its position in it.</summary>
    public static (int[] Slots, int[] Positions) SlotsAndPositions(int tokens, int seqLen)
    {
        var slots = new int[tokens];
        var positions = new int[tokens];
        for (int i = 0; i < tokens; i++) (slots[i], positions[i]) = (i / seqLen, i % seqLen);
        return (slots, positions);
    }

    /// <summary>The ids of step <paramref name="step"/>: [batch·seqLen], sample after sample.</summary>
    public static int[] Batch(int[] stream, int seqLen, int batch, int step)
    {
        int n = Samples(stream.Length, seqLen);
        if (n == 0) throw new BitDeltaException($"the calibration text is {stream.Length} tokens, shorter than one sample of {seqLen}");
        var ids = new int[batch * seqLen];
        for (int r = 0; r < batch; r++)
        {
            long sample = ((long)step * batch + r) % n;
            Array.Copy(stream, sample * seqLen, ids, (long)r * seqLen, seqLen);
        }
        return ids;
    }
}

/// <summary>
/// The teacher's logits for every step's batch, computed once with the fine-tune alone on the device and kept in
/// an f32 file, so that the fine-tune's weights need not share the device with the student's (a 7B pair would
/// need both in f16 beside the activations). Each step reads back its [batch·seqLen, vocab] block.
/// </summary>
public sealed class TeacherLogits : IDisposable
{
    readonly FileStream file;
    public string Path { get; }
    public int Rows { get; }
    public int Vocab { get; }
    public int Steps { get; }
    long StepBytes => (long)Rows * Vocab * sizeof(float);

    TeacherLogits(FileStream file, string path, int rows, int vocab, int steps)
    {
        this.file = file;
        Path = path;
        Rows = rows;
        Vocab = vocab;
        Steps = steps;
    }

    /// <summary>Runs <paramref name="teacher"/> over every step's batch and writes the logits to <paramref name="path"/>
    /// (a scratch file, deleted on dispose).</summary>
    public static TeacherLogits Compute(LlamaModel teacher, Func<int, int[]> batchIds, DistillOptions o, string path,
                                        IProgress<(int Done, int Total)>? progress = null)
    {
        var c = teacher.Config;
        int rows = o.Batch * o.SeqLen;
        var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20, FileOptions.DeleteOnClose);
        try
        {
            var (slots, positions) = Calibration.SlotsAndPositions(rows, o.SeqLen);
            var all = Enumerable.Range(0, rows).ToArray();
            var host = new byte[(long)rows * c.VocabSize * sizeof(float)];
            using var cache = teacher.NewCache(o.Batch, o.SeqLen);
            using var logits = Tensor.Empty([rows, c.VocabSize], DType.F32, teacher.Device);
            for (int s = 0; s < o.Steps; s++)
            {
                progress?.Report((s, o.Steps));
                teacher.Forward(batchIds(s), slots, positions, all, cache, logits);
                logits.CopyTo(host);
                fs.Write(host);
            }
            fs.Flush();
            progress?.Report((o.Steps, o.Steps));
            return new TeacherLogits(fs, path, rows, c.VocabSize, o.Steps);
        }
        catch { fs.Dispose(); throw; }
    }

    /// <summary>Copies step <paramref name="step"/>'s logits into <paramref name="dst"/> (F32 [rows, vocab], any device).</summary>
    public void Read(int step, Tensor dst, byte[] scratch)
    {
        if ((uint)step >= (uint)Steps) throw new ArgumentOutOfRangeException(nameof(step));
        RandomAccess.Read(file.SafeFileHandle, scratch.AsSpan(0, (int)StepBytes), step * StepBytes);
        using var host = Tensor.FromHostMemory(scratch.AsMemory(0, (int)StepBytes), [Rows, Vocab], DType.F32);
        dst.CopyFrom(host);
    }

    public byte[] NewScratch() => GC.AllocateUninitializedArray<byte>((int)StepBytes, pinned: true);

    public void Dispose() => file.Dispose();
}

/// <summary>
/// BitDelta scale distillation (arXiv 2402.10193 §3.2): the student is the base with every decoder linear
/// W_base + α·S (S the frozen signs), and only the α train, one per matrix, by AdamW on the mean squared error
/// between the student's logits and the teacher's (the fine-tune's) at every position of the batch. The paper
/// trains only the scales; the reference code hands every un-frozen parameter to the optimizer, which in its
/// setup is the same set. Tensors the delta stores whole (embedding, head, norms) are used as stored and frozen.
/// </summary>
public sealed class ScaleDistiller : IDisposable
{
    readonly LlamaModel model;
    readonly DeltaWeights delta;
    readonly RopeTable rope;
    readonly Tensor dScales;
    /// <summary>Per (layer, linear): its slot in <see cref="Scales"/>, or −1 where the delta has no signs.</summary>
    readonly int[,] slot;
    /// <summary>HF weight names of the trained linears, in the order of <see cref="Scales"/>.</summary>
    public string[] Names { get; }
    /// <summary>The scales α, updated by each <see cref="Step"/>.</summary>
    public float[] Scales { get; }
    /// <summary>dLoss/dα of the last step, before the update.</summary>
    public float[] Grads { get; }
    public AdamW Optimizer { get; }

    public ScaleDistiller(LlamaModel model, DeltaWeights delta, int seqLen)
    {
        if (delta.Layers.Length != model.Config.NumLayers)
            throw new ArgumentException($"{delta.Path}: {delta.Layers.Length} layers, the model has {model.Config.NumLayers}");
        this.model = model;
        this.delta = delta;
        var where = new List<(int Layer, int Linear)>();
        slot = new int[delta.Layers.Length, LayerWeights.LinearNames.Length];
        for (int l = 0; l < delta.Layers.Length; l++)
            for (int k = 0; k < LayerWeights.LinearNames.Length; k++)
            {
                slot[l, k] = delta.Layers[l].Bits[k] != null ? where.Count : -1;
                if (slot[l, k] >= 0) where.Add((l, k));
            }
        if (where.Count == 0) throw new BitDeltaException($"{delta.Path}: no binarized linears, so no scales to distil");
        Names = [.. where.Select(w => $"{LlamaWeights.LayerPrefix(w.Layer)}{LayerWeights.LinearNames[w.Linear]}.weight")];
        Scales = [.. where.Select(w => delta.Layers[w.Layer].Bits[w.Linear]!.Scale)];
        Grads = new float[where.Count];
        Optimizer = new AdamW(where.Count);
        var c = model.Config;
        rope = RopeTable.Create(c.HeadDim, c.RopeTheta, c.RopeScaling, seqLen, model.Device);
        dScales = Tensor.Empty([where.Count], DType.F32, model.Device);
    }

    /// <summary>
    /// One optimizer step on <paramref name="batch"/> sequences of equal length (<paramref name="ids"/> one after
    /// another) against <paramref name="teacher"/> logits [ids, vocab] at learning rate <paramref name="lr"/>.
    /// Returns the loss before the update.
    /// </summary>
    public float Step(int[] ids, int batch, Tensor teacher, double lr)
    {
        float loss = LossAndGrads(ids, batch, teacher);
        Optimizer.Step(Scales, Grads, lr);
        return loss;
    }

    /// <summary>The forward and backward pass: the loss, with dLoss/dα in <see cref="Grads"/>; no update.</summary>
    public float LossAndGrads(int[] ids, int batch, Tensor teacher)
    {
        var c = model.Config;
        var dev = model.Device;
        int n = ids.Length, T = n / batch;
        if (batch < 1 || T * batch != n) throw new ArgumentException($"distill: {n} ids are not {batch} sequences of equal length");
        if (T > rope.MaxPositions) throw new ArgumentException($"distill: sequences of {T} tokens, the rope table has {rope.MaxPositions}");
        var (slots, positions) = Calibration.SlotsAndPositions(n, T);
        using var tIds = Tensor.From(ids, [n], dev);
        using var tSlots = Tensor.From(slots, [n], dev);
        using var tPos = Tensor.From(positions, [n], dev);
        using var lossT = Tensor.Empty([1], DType.F32, dev);
        dScales.Fill(0);
        float eps = (float)c.RmsNormEps, scale = 1f / MathF.Sqrt(c.HeadDim);
        int window = c.SlidingWindow ?? 0;
        var W = model.Weights;
        var tape = new Tape();

        var embedding = delta.Embedding ?? W.Embedding;
        var x = Var.Empty([n, c.HiddenSize], dev, needsGrad: false);
        Embedding.Run(tIds, embedding, x.Value);
        for (int l = 0; l < c.NumLayers; l++)
        {
            var w = W.Layers[l];
            var d = delta.Layers[l];
            Var Lin(Var input, int k, Tensor baseWeight)
            {
                if (d.Bits[k] is { } b)
                    return Ops.BitLinear(tape, input, baseWeight, b.Signs, Scales[slot[l, k]], dScales, slot[l, k]);
                return Ops.Linear(tape, input, d.Whole[k] ?? baseWeight);
            }
            var h = Ops.RmsNorm(tape, x, d.InputNorm ?? w.InputNorm, eps);
            var q = Lin(h, 0, w.Q);
            var k = Lin(h, 1, w.K);
            var v = Lin(h, 2, w.V);
            h.Release();
            Ops.Rope(tape, q, c.NumHeads, tPos, rope);
            Ops.Rope(tape, k, c.NumKvHeads, tPos, rope);
            var a = Ops.Attention(tape, q, k, v, c.NumHeads, c.NumKvHeads, c.HeadDim, batch, tSlots, tPos, window, scale);
            q.Release(); k.Release(); v.Release();
            var o = Lin(a, 3, w.O);
            a.Release();
            var x2 = Ops.Add(tape, x, o);
            x.Release(); o.Release();
            var h2 = Ops.RmsNorm(tape, x2, d.PostAttentionNorm ?? w.PostAttentionNorm, eps);
            var g = Lin(h2, 4, w.Gate);
            var u = Lin(h2, 5, w.Up);
            h2.Release();
            var s = Ops.SwiGlu(tape, g, u);
            g.Release(); u.Release();
            var down = Lin(s, 6, w.Down);
            s.Release();
            x = Ops.Add(tape, x2, down);
            x2.Release(); down.Release();
        }
        var hn = Ops.RmsNorm(tape, x, delta.FinalNorm ?? W.FinalNorm, eps);
        x.Release();
        var head = W.LmHeadIsEmbedding ? embedding : delta.LmHead ?? W.LmHead;
        var logits = Ops.Linear(tape, hn, head);
        hn.Release();
        Ops.Mse(logits, teacher, lossT);
        tape.Backward();
        logits.Release();
        dScales.ToFloatArray().CopyTo(Grads, 0);
        return lossT.ToFloatArray()[0];
    }

    public Dictionary<string, float> ScalesByName() => Names.Zip(Scales).ToDictionary(p => p.First, p => p.Second);

    public void Dispose()
    {
        rope.Dispose();
        dScales.Dispose();
    }
}

/// <summary>What a distillation run did: per step its loss and learning rate, and where the time went.</summary>
public sealed record DistillReport(float[] Loss, double[] Lr, Dictionary<string, float> Before, Dictionary<string, float> After,
                                   int CalibrationTokens, int Samples, double TeacherSeconds, double TrainSeconds, long PeakDeviceBytes);

public static class Distillation
{
    /// <summary>
    /// The whole run: the teacher's logits for every step (fine-tune alone on the device, then freed), then the
    /// student (base + the delta at <paramref name="deltaPath"/>) trained for <see cref="DistillOptions.Steps"/>.
    /// <paramref name="onStep"/> hears (step, loss) after each step. The delta file is not changed: the caller
    /// writes the trained scales (<see cref="DeltaFile.WriteWithScales"/>).
    /// </summary>
    public static DistillReport Run(string baseDir, string ftDir, string deltaPath, int[] stream, DistillOptions o, Device dev,
                                    string scratchPath, IProgress<(int Done, int Total)>? teacherProgress = null,
                                    Action<int, float>? onStep = null)
    {
        o.Validate();
        int samples = Calibration.Samples(stream.Length, o.SeqLen);
        if (samples == 0) throw new BitDeltaException($"the calibration text is {stream.Length} tokens, shorter than one sample of --seq-len {o.SeqLen}");
        int[] Ids(int step) => Calibration.Batch(stream, o.SeqLen, o.Batch, step);
        var clock = Stopwatch.StartNew();
        TeacherLogits teacher;
        using (var ft = LlamaModel.Load(ftDir, dev, o.SeqLen))
        {
            if (o.SeqLen > ft.Config.MaxPositionEmbeddings)
                throw new BitDeltaException($"--seq-len {o.SeqLen} is past {ftDir}'s max_position_embeddings of {ft.Config.MaxPositionEmbeddings}");
            teacher = TeacherLogits.Compute(ft, Ids, o, scratchPath, teacherProgress);
        }
        using var _ = teacher;
        double teacherSeconds = clock.Elapsed.TotalSeconds;
        dev.Pool?.Trim();

        clock.Restart();
        using var model = LlamaModel.Load(baseDir, dev, o.SeqLen);
        using var delta = DeltaWeights.Load(deltaPath, baseDir, model.Config, dev);
        using var distiller = new ScaleDistiller(model, delta, o.SeqLen);
        var before = distiller.ScalesByName();
        var loss = new float[o.Steps];
        var lrs = new double[o.Steps];
        var scratch = teacher.NewScratch();
        using var target = Tensor.Empty([o.Batch * o.SeqLen, model.Config.VocabSize], DType.F32, dev);
        for (int s = 0; s < o.Steps; s++)
        {
            teacher.Read(s, target, scratch);
            lrs[s] = LrSchedule.Cosine(o.Lr, s, o.Steps);
            loss[s] = distiller.Step(Ids(s), o.Batch, target, lrs[s]);
            if (!float.IsFinite(loss[s])) throw new BitDeltaException($"distillation step {s}: the loss is {loss[s]}; try a lower --lr");
            onStep?.Invoke(s, loss[s]);
        }
        dev.Synchronize();
        return new DistillReport(loss, lrs, before, distiller.ScalesByName(), stream.Length, samples, teacherSeconds,
                                 clock.Elapsed.TotalSeconds, dev.Pool?.PeakBytesInUse ?? 0);
    }
}
