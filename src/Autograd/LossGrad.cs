using BitDeltaNative.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace BitDeltaNative.Autograd;

/// <summary>Losses with their gradients with respect to the logits.</summary>
public static class LossGrad
{
    /// <summary>
    /// BitDelta's scale-distillation loss (arXiv 2402.10193 §3.2, eq. 3: ‖Z_fine − Z_bin‖² of the logits; the
    /// reference code, bitdelta/train.py, uses <c>F.mse_loss(teacher_logits, student_logits)</c>, which takes the mean): L = (1/N)·Σ_i (s_i − t_i)² over all N
    /// elements, dL/ds_i = 2·(s_i − t_i)/N. Writes dStudent, returns L (f64 sum rounded once).
    /// </summary>
    public static float Mse(ReadOnlySpan<float> student, ReadOnlySpan<float> teacher, Span<float> dStudent)
    {
        int n = student.Length;
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            double e = (double)student[i] - teacher[i];
            sum += e * e;
            dStudent[i] = (float)(2 * e / n);
        }
        return (float)(sum / n);
    }

    /// <summary>
    /// Cross-entropy with torch's defaults (<c>F.cross_entropy(reduction="mean", ignore_index=-100)</c>): rows
    /// whose target is <see cref="CrossEntropy.IgnoreIndex"/> count for nothing; L = (1/N)·Σ_r nll_r over the N
    /// other rows, nll_r = logsumexp(x_r) − x_r[t_r]; dL/dx_r = (softmax(x_r) − onehot(t_r))/N, zero on ignored
    /// rows. With every row ignored torch's mean is 0/0 = NaN: so is L here, and dlogits is all zero.
    /// logits and dLogits are [rows, vocab].
    /// </summary>
    public static float CrossEntropyMean(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, Span<float> dLogits, int vocab)
    {
        int counted = 0;
        foreach (int t in targets) if (t != CrossEntropy.IgnoreIndex) counted++;
        double total = 0;
        for (int r = 0; r < targets.Length; r++)
        {
            var dx = dLogits.Slice(r * vocab, vocab);
            int target = targets[r];
            if (target == CrossEntropy.IgnoreIndex) { dx.Clear(); continue; }
            if ((uint)target >= (uint)vocab) throw new ArgumentException($"cross-entropy: target {target} outside [0, {vocab})");
            var x = logits.Slice(r * vocab, vocab);
            double m = double.NegativeInfinity;
            for (int i = 0; i < vocab; i++) m = Math.Max(m, x[i]);
            double s = 0;
            for (int i = 0; i < vocab; i++) s += Math.Exp(x[i] - m);
            total += (m - x[target]) + Math.Log(s);
            for (int i = 0; i < vocab; i++)
                dx[i] = (float)((Math.Exp(x[i] - m) / s - (i == target ? 1 : 0)) / counted);
        }
        return counted == 0 ? float.NaN : (float)(total / counted);
    }

    // ---- on tensors ----

    /// <summary>
    /// <see cref="Mse"/> on tensors: student, teacher and dStudent f32 of one element count N (any shapes, up to
    /// 2³¹ − 1 elements; 512·32000 logits of a distillation step), loss f32 [1]. dStudent = 2(s − t)/N is
    /// overwritten, loss[0] = (1/N)·Σ (s − t)². On a device the sum is deterministic (<see cref="Partials"/>):
    /// f32 within a thread (≤ 16 terms) and a group, the partials in f64, so the loss is within ~1e-6 of the f64
    /// sum (worst case; typically a few 1e-7: every term is positive, nothing cancels). dStudent is within a few
    /// ulps of the twin's (s − t is rounded once in f32 before the multiply).
    /// </summary>
    public static void MseRun(Tensor student, Tensor teacher, Tensor dStudent, Tensor loss)
    {
        Need.SameDevice(student, teacher, dStudent, loss);
        Need.F32("mse student", student);
        Need.F32("mse teacher", teacher);
        Need.F32("mse dstudent", dStudent);
        long n = student.ElementCount;
        Need.Count("mse teacher", teacher, n);
        Need.Count("mse dstudent", dStudent, n);
        Need.Shape("mse loss", loss, 1);
        Need.F32("mse loss", loss);
        if (n > int.MaxValue) throw new ArgumentException($"mse: at most {int.MaxValue} elements, got {student}");
        if (!loss.Device.IsIlgpu)
        {
            loss.Host<float>()[0] = Mse(student.Host<float>(), teacher.Host<float>(), dStudent.Host<float>());
            return;
        }
        var dev = loss.Device;
        if (n == 0)
        {
            using var nan = Tensor.From(new[] { float.NaN }, [1], dev);   // torch's mean of nothing
            loss.CopyFrom(nan);
            return;
        }
        int threads = Partials.Threads(dev), groups = Partials.Groups(n, threads);
        using var partials = Tensor.Empty([groups], DType.F32, dev);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, float>>(MseKernel)(
            new KernelConfig(groups, threads), student.View<float>(), teacher.View<float>(), dStudent.View<float>(), partials.View<float>(), n, (float)(2.0 / n));
        Partials.Finish(partials, groups, loss, 0, accumulate: false, 1.0 / n);
    }

    /// <summary>Phase 1 of <see cref="Partials"/>: grid-strided, writes dStudent and sums (s − t)² per group.</summary>
    static void MseKernel(ArrayView<float> s, ArrayView<float> t, ArrayView<float> ds, ArrayView<float> partials, long n, float twoOverN)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        float acc = 0;
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = (long)Grid.IdxX * Group.DimX + Group.IdxX; i < n; i += stride)
        {
            float e = s[i] - t[i];
            acc += e * e;
            ds[i] = twoOverN * e;
        }
        acc = Reduce.GroupSum(acc, scratch);
        if (Group.IdxX == 0) partials[Grid.IdxX] = acc;
    }

    /// <summary>
    /// <see cref="CrossEntropyMean"/> on tensors: logits and dLogits f32 [rows, vocab], targets I32 [rows], loss f32
    /// [1]; ignore_index and the all-ignored NaN as the twin. On a device: the per-row nll by the forward's kernel
    /// (<see cref="CrossEntropy.Run"/>), dLogits by one group per row, the mean by one warp in f64 (deterministic).
    /// A target outside [0, vocab) that is not the ignore index throws on the host; on a device its row of
    /// dLogits and the loss are NaN.
    /// </summary>
    public static void CrossEntropyRun(Tensor logits, Tensor targets, Tensor dLogits, Tensor loss)
    {
        Need.SameDevice(logits, targets, dLogits, loss);
        Need.F32("cross-entropy backward logits", logits);
        Need.F32("cross-entropy backward dlogits", dLogits);
        Need.F32("cross-entropy loss", loss);
        Need.Shape("cross-entropy loss", loss, 1);
        if (logits.Rank != 2) throw new ArgumentException($"cross-entropy backward logits: expected [rows, vocab], got {logits}");
        int rows = logits.Dim(0), vocab = logits.Dim(1);
        if (targets.DType != DType.I32) throw new ArgumentException($"cross-entropy backward targets: expected I32, got {targets}");
        Need.Shape("cross-entropy backward targets", targets, rows);
        Need.Shape("cross-entropy backward dlogits", dLogits, rows, vocab);
        Need.Disjoint("cross-entropy backward", logits, dLogits);
        if (!loss.Device.IsIlgpu)
        {
            loss.Host<float>()[0] = CrossEntropyMean(logits.Host<float>(), targets.Host<int>(), dLogits.Host<float>(), vocab);
            return;
        }
        var dev = loss.Device;
        if (rows == 0 || vocab == 0)
        {
            using var nan = Tensor.From(new[] { float.NaN }, [1], dev);
            loss.CopyFrom(nan);
            return;
        }
        using var nll = Tensor.Empty([rows], DType.F32, dev);
        CrossEntropy.Run(logits, targets, nll);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>>(CrossEntropyKernel)(
            new KernelConfig(rows, Softmax.GroupSize(vocab, dev)), logits.View<float>(), targets.View<int>(), dLogits.View<float>(), rows, vocab);
        dev.GroupedKernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, int, ArrayView<float>>>(CrossEntropyMeanKernel)(
            new KernelConfig(1, 32), nll.View<float>(), targets.View<int>(), rows, loss.View<float>());
    }

    /// <summary>
    /// One group per row: the rows counted (every group counts the targets itself, rows ≪ vocab·rows reads),
    /// max, Σ e^(x − max), then dx_i = (p_i − [i = t])/counted. At the target, p_t − 1 = −Σ_{i≠t} e_i / Σ e_i is
    /// taken from the sum without the target: 1 − p_t by subtraction would lose every digit when the model is sure
    /// of the right answer, which is where training spends its time.
    /// </summary>
    static void CrossEntropyKernel(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> dLogits, int rows, int vocab)
    {
        var scratch = SharedMemory.Allocate<float>(33);
        int r = Grid.IdxX, target = targets[r];
        long row = (long)r * vocab;
        // Uniform across the group: it leaves together, before any barrier.
        if (target == CrossEntropy.IgnoreIndex || (uint)target >= (uint)vocab)
        {
            float fill = target == CrossEntropy.IgnoreIndex ? 0f : float.NaN;
            for (int i = Group.IdxX; i < vocab; i += Group.DimX) dLogits[row + i] = fill;
            return;
        }
        float counted = 0;
        for (int i = Group.IdxX; i < rows; i += Group.DimX) counted += targets[i] != CrossEntropy.IgnoreIndex ? 1f : 0f;
        counted = Reduce.GroupSum(counted, scratch);   // exact: integers below 2²⁴
        float m = float.NegativeInfinity;
        for (int i = Group.IdxX; i < vocab; i += Group.DimX) m = MathF.Max(m, logits[row + i]);
        m = Reduce.GroupMax(m, scratch);
        float rest = 0;
        for (int i = Group.IdxX; i < vocab; i += Group.DimX)
            if (i != target) rest += MathF.Exp(logits[row + i] - m);
        rest = Reduce.GroupSum(rest, scratch);
        float sum = rest + MathF.Exp(logits[row + target] - m);
        float inv = 1f / (sum * counted);
        for (int i = Group.IdxX; i < vocab; i += Group.DimX)
            dLogits[row + i] = i == target ? -rest * inv : MathF.Exp(logits[row + i] - m) * inv;
    }

    /// <summary>One warp: loss = Σ nll / counted in f64 (ignored rows have nll 0), NaN when nothing counts.</summary>
    static void CrossEntropyMeanKernel(ArrayView<float> nll, ArrayView<int> targets, int rows, ArrayView<float> loss)
    {
        double s = 0;
        int counted = 0;
        for (int i = Group.IdxX; i < rows; i += Group.DimX)
        {
            s += nll[i];
            counted += targets[i] != CrossEntropy.IgnoreIndex ? 1 : 0;
        }
        for (int o = 16; o > 0; o /= 2)
        {
            s += Warp.ShuffleDown(s, o);
            counted += Warp.ShuffleDown(counted, o);
        }
        if (Group.IdxX == 0) loss[0] = counted == 0 ? float.NaN : (float)(s / counted);
    }
}
