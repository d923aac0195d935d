using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace BitDeltaNative.Kernels;

/// <summary>
/// Hopper's warpgroup matrix product from C#, one instruction pinned down: <c>wgmma.mma_async.m64n8k16.f32.f16.f16</c>
/// (PTX ISA §9.7.15), D [64, 8] = A [64, 16] · Bᵀ with B [8, 16], f16 in, f32 out, A and B read from shared memory by
/// the tensor cores through 64-bit matrix descriptors. cuBLAS's rate on the H100/H200 (600–740 TFLOP/s at 7B shapes)
/// needs this instruction; <c>mma.sync</c> peaks near 460 (bench/NOTES.md). Two things ILGPU does not do are done by
/// PTX passes (<see cref="PtxPasses"/>): the target must be <c>sm_90a</c> (<see cref="ArchSpecificAttribute"/>), and
/// the asm operands go through registers (<see cref="PromoteLocalsAttribute"/>).
///
/// Shared-memory layout without swizzle (the descriptor's mode 0): the operands in "core matrices" of 8 rows × 16 bytes
/// (8 × 8 halves), each 128 contiguous bytes. For a K-major operand (rows of K, as A and B are here) the descriptor's
/// leading-dimension byte offset steps between core matrices along K and its stride-dimension byte offset between core
/// matrices along M (or N) (PTX ISA §9.7.15.5.1, "Matrix Descriptor Format"). Here A's core matrix (m, k) sits at
/// 256·m + 128·k and B's k-th at 2048 + 128·k: leading offset 128, stride offset 256.
///
/// Each of the 128 threads then holds four of D: warp w has rows 16w … 16w + 15, lane l rows 16w + l/4 and +8, columns
/// 2(l mod 4) and +1 (mma.m16n8's accumulator layout per warp). Off CUDA the kernel computes the same outputs from the
/// shared bytes through the same descriptors, read by the meaning above, so the CPU accelerator checks the layout and the
/// GPU checks the meaning.
/// </summary>
public static class Wgmma
{
    const int ABytes = 64 * 16 * 2, BBytes = 8 * 16 * 2;

    /// <summary>Shared memory the probe asks for: past its operands, room for the reads of a wrong reading of the
    /// descriptor (the swapped offsets reach 4 KB), so that a wrong guess gives wrong numbers, not a fault that ends the
    /// process's CUDA context.</summary>
    const int SharedBytes = 8192;

    /// <summary>The matrix descriptor (PTX ISA §9.7.15.5.1): bits 0–13 the shared address / 16, 16–29 the leading-dimension
    /// byte offset / 16, 32–45 the stride-dimension byte offset / 16, 49–51 base offset 0, 62–63 swizzle 0 (none).</summary>
    public static ulong Descriptor(uint sharedAddress, int leading, int stride) =>
        ((sharedAddress & 0x3FFFFu) >> 4) | ((ulong)(((uint)leading >> 4) & 0x3FFF) << 16) | ((ulong)(((uint)stride >> 4) & 0x3FFF) << 32);

    /// <summary>Byte offset of element (row, k) of a K-major operand laid out in core matrices from a descriptor's meaning:
    /// (row / 8)·stride + (k / 8)·leading + (row mod 8)·16 + (k mod 8)·2.</summary>
    static int At(int row, int k, int leading, int stride) => (row >> 3) * stride + (k >> 3) * leading + ((row & 7) << 4) + ((k & 7) << 1);

    /// <summary>One warpgroup: A and B into shared memory in the layout the class describes, then D through descriptors
    /// built from <paramref name="leading"/> and <paramref name="stride"/> (the layout's own are 128 and 256; the audit
    /// also tries them swapped, which must not match).</summary>
    [ArchSpecific, PromoteLocals]
    static void ProbeKernel(ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> d, int leading, int stride)
    {
        var sh = SharedMemory.GetDynamic<ushort>();
        uint shAt = Bulk.Dynamic(0);
        int t = Group.IdxX;
        for (int i = t; i < SharedBytes / 2; i += 128) sh[i] = 0;
        Group.Barrier();
        for (int i = t; i < 64 * 16; i += 128) sh[At(i >> 4, i & 15, 128, 256) >> 1] = a[i];
        for (int i = t; i < 8 * 16; i += 128) sh[(ABytes + At(i >> 4, i & 15, 128, 256)) >> 1] = b[i];
        // the tensor cores read shared memory through the async proxy: order the threads' stores before them
        if (CudaAsm.IsSupported) CudaAsm.Emit("fence.proxy.async.shared::cta;");
        Group.Barrier();
        int w = t >> 5, lane = t & 31, row = 16 * w + (lane >> 2), col = 2 * (lane & 3);
        float d0, d1, d2, d3;
        if (CudaAsm.IsSupported)
        {
            Input<ulong> da = Descriptor(shAt, leading, stride), db = Descriptor(shAt + ABytes, leading, stride);
            Output<float> o0 = default, o1 = default, o2 = default, o3 = default;
            Input<int> accumulate = 0;
            // scale-d false: D = A·B, the registers' old values unread
            CudaAsm.EmitRef("{ .reg .pred p; setp.ne.b32 p, %6, 0; wgmma.fence.sync.aligned; " +
                            "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0,%1,%2,%3}, %4, %5, p, 1, 1, 0, 0; " +
                            "wgmma.commit_group.sync.aligned; wgmma.wait_group.sync.aligned 0; }",
                            ref o0, ref o1, ref o2, ref o3, ref da, ref db, ref accumulate);
            d0 = o0.Value; d1 = o1.Value; d2 = o2.Value; d3 = o3.Value;
        }
        else
        {
            d0 = Dot(sh, row, col, leading, stride);
            d1 = Dot(sh, row, col + 1, leading, stride);
            d2 = Dot(sh, row + 8, col, leading, stride);
            d3 = Dot(sh, row + 8, col + 1, leading, stride);
        }
        d[row * 8 + col] = d0;
        d[row * 8 + col + 1] = d1;
        d[(row + 8) * 8 + col] = d2;
        d[(row + 8) * 8 + col + 1] = d3;
    }

    /// <summary>Σ_k A[row, k]·B[n, k] in f32, in k order, from the shared bytes as the descriptors' meaning reads them.</summary>
    static float Dot(ArrayView<ushort> sh, int row, int n, int leading, int stride)
    {
        float s = 0;
        for (int k = 0; k < 16; k++)
            s += (float)Interop.IntAsFloat(sh[At(row, k, leading, stride) >> 1]) * (float)Interop.IntAsFloat(sh[(ABytes + At(n, k, leading, stride)) >> 1]);
        return s;
    }

    /// <summary>D [64, 8] f32 = A [64, 16] · Bᵀ, A and B F16 [8, 16], one warpgroup on an ILGPU device (CUDA needs an
    /// sm_90 GPU: the kernel's PTX names sm_90a).</summary>
    public static void Probe(Tensor a, Tensor b, Tensor d, int leading = 128, int stride = 256)
    {
        Need.SameDevice(a, b, d);
        if (a.DType != DType.F16 || a.ElementCount != 64 * 16) throw new ArgumentException($"wgmma a: expected F16 [64, 16], got {a}");
        if (b.DType != DType.F16 || b.ElementCount != 8 * 16) throw new ArgumentException($"wgmma b: expected F16 [8, 16], got {b}");
        Need.F32("wgmma d", d);
        Need.Count("wgmma d", d, 64 * 8);
        if (!a.Device.IsIlgpu) throw new ArgumentException("wgmma: needs an ILGPU device");
        a.Device.GroupedKernel<Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int, int>>(ProbeKernel)(
            new KernelConfig(1, 128, SharedMemoryConfig.RequestDynamic<byte>(SharedBytes)),
            a.View<ushort>(), b.View<ushort>(), d.View<float>(), leading, stride);
    }

    /// <summary>D = A·Bᵀ in f64 (the spec).</summary>
    public static void Twin(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> d)
    {
        for (int r = 0; r < 64; r++)
            for (int n = 0; n < 8; n++)
            {
                double s = 0;
                for (int k = 0; k < 16; k++) s += (double)a[r * 16 + k] * b[n * 16 + k];
                d[r * 8 + n] = (float)s;
            }
    }

    /// <summary>The probe against the twin on random f16 values, with the layout's byte offsets and with them swapped:
    /// the two relative errors.</summary>
    public static (double Error, double Swapped) Measure(Device dev, Random rng)
    {
        var a = Check.Rounded(Check.Values(rng, 64 * 16), DType.F16);
        var b = Check.Rounded(Check.Values(rng, 8 * 16), DType.F16);
        using var ta = Tensor.From(a, [64, 16], dev, DType.F16);
        using var tb = Tensor.From(b, [8, 16], dev, DType.F16);
        using var td = Check.Poisoned([64, 8], DType.F32, dev);
        using var ts = Check.Poisoned([64, 8], DType.F32, dev);
        Probe(ta, tb, td);
        Probe(ta, tb, ts, leading: 256, stride: 128);
        var want = new float[64 * 8];
        Twin(a, b, want);
        return (Check.RelativeError(td.ToFloatArray(), want), Check.RelativeError(ts.ToFloatArray(), want));
    }

    /// <summary><see cref="Measure"/> as an audit case; the shape column gives the error with the offsets swapped, which
    /// must be large (the descriptors' fields are then read as this file says).</summary>
    public static AuditCase Case => new("wgmma m64n8k16", Check.F32Bound, (dev, rng) =>
    {
        if (dev.Kind == DeviceKind.Cuda && dev.Accelerator is CudaAccelerator cu && cu.Architecture != CudaArchitecture.SM_90)
            return (0, $"not run: needs a Hopper GPU (sm_90), this one is {cu.Architecture}");
        var (err, swapped) = Measure(dev, rng);
        return (err, $"{(dev.Kind == DeviceKind.Cuda ? "tensor cores" : "emulated")}; offsets swapped: {swapped:E1}");
    });
}
