using System.Collections.Concurrent;
using System.Reflection;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using Expr = System.Linq.Expressions.Expression;

namespace BitDeltaNative;

public enum DeviceKind
{
    /// <summary>Managed memory; ops run their scalar/SIMD CPU twin. For CI and machines with no GPU.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU through ILGPU's CUDA backend (needs only the driver).</summary>
    Cuda,
    /// <summary>ILGPU's CPU accelerator: runs the very kernels that go to CUDA, on CPU threads,
    /// so CI can test GPU code without a GPU. Slow; for tests and <c>audit</c>.</summary>
    IlgpuCpu,
}

/// <summary>
/// Where tensors live and ops run. One ILGPU <see cref="Context"/> per process; one accelerator per
/// device; kernels compiled once and cached; device memory recycled through <see cref="MemoryPool"/>
/// so that a decode loop, which asks for the same sizes every step, allocates nothing new. Devices live for the
/// process; the shared instances are never torn down.
/// </summary>
public sealed class Device
{
    static readonly Lazy<Context> SharedContext = new(() =>
        Context.Create(b =>
        {
            b.Default().Optimize(OptimizationLevel.O2).Cuda().CPU().EnableAlgorithms();
            if (Profiling) b.Profiling();
        }));

    /// <summary>Lets <see cref="BeginTrace"/> put a timing event after every launch (<c>bench multitenant --step-profile</c>).
    /// ILGPU takes it when the process's context is made, so set it before the first device is asked for.</summary>
    public static bool Profiling { get; set; }
    static readonly object Gate = new();
    static Device? cuda, ilgpuCpu;

    public static readonly Device Cpu = new(DeviceKind.Cpu, null);

    /// <summary>The process-wide ILGPU context (also used to compile PTX offline, without a GPU).</summary>
    public static Context IlgpuContext => SharedContext.Value;

    public DeviceKind Kind { get; }
    public string Name { get; }
    readonly Accelerator? accelerator;
    readonly ConcurrentDictionary<MethodInfo, Delegate> kernels = new();
    public MemoryPool? Pool { get; }

    Device(DeviceKind kind, Accelerator? acc)
    {
        Kind = kind;
        accelerator = acc;
        Name = acc is null ? "cpu" : kind == DeviceKind.Cuda ? $"cuda ({acc.Name})" : "ilgpu-cpu";
        if (acc != null) Pool = new MemoryPool(acc);
    }

    public bool IsIlgpu => accelerator != null;

    /// <summary>Makes this device's context current on the calling thread (CUDA contexts are per thread); a thread
    /// that runs kernels and did not create the device, like the server's scheduler, calls it once.</summary>
    public void BindThread() => accelerator?.Bind();

    public Accelerator Accelerator =>
        accelerator ?? throw new InvalidOperationException("the managed CPU device has no ILGPU accelerator");

    /// <summary>True where the CUDA driver and at least one NVIDIA GPU are present.</summary>
    public static bool CudaAvailable
    {
        get
        {
            try { return SharedContext.Value.GetCudaDevices().Count > 0; }
            catch (Exception) { return false; }
        }
    }

    /// <summary>The first CUDA GPU. A missing GPU or driver is a clear error, not a crash.</summary>
    public static Device Cuda()
    {
        lock (Gate)
        {
            if (cuda != null) return cuda;
            List<CudaDevice> devices;
            try { devices = [.. SharedContext.Value.GetCudaDevices()]; }
            catch (Exception e) { throw new BitDeltaException($"--device cuda: the CUDA driver could not be loaded ({e.Message.Split('\n')[0]})", e); }
            if (devices.Count == 0)
                throw new BitDeltaException("--device cuda: no NVIDIA GPU found (is the NVIDIA driver installed and is a GPU visible?); use --device cpu");
            TargetOwnArchitecture(devices[0].Capabilities, devices[0].Architecture);
            return cuda = new Device(DeviceKind.Cuda, devices[0].CreateCudaAccelerator(SharedContext.Value));
        }
    }

    /// <summary>
    /// ILGPU 1.5.3 writes <c>.target</c> as the lowest architecture its own intrinsics need (sm_80), whatever the GPU, and
    /// the driver's JIT then refuses Hopper's instructions in inline PTX (the copy engine's bulk copies and transaction
    /// barriers, Bulk.cs: "a PTX JIT compilation failed" on the H200). The target is a settable property with an internal
    /// setter: set it to the device's own architecture. The driver compiles for the GPU it runs on either way, so other
    /// kernels are not changed by it.
    /// </summary>
    public static void TargetOwnArchitecture(CapabilityContext capabilities, CudaArchitecture? architecture)
    {
        if (capabilities is not CudaCapabilityContext cc || architecture is not { } arch || cc.TargetArchitecture >= arch) return;
        typeof(CudaCapabilityContext).GetProperty(nameof(CudaCapabilityContext.TargetArchitecture))!.SetValue(cc, arch);
    }

    /// <summary>ILGPU's CPU accelerator with NVIDIA-like limits (warp 32, groups up to 1024 threads):
    /// the default CPU device allows groups of at most 16 threads.</summary>
    public static Device IlgpuCpu()
    {
        lock (Gate)
            return ilgpuCpu ??= new Device(DeviceKind.IlgpuCpu, CPUDevice.Nvidia.CreateCPUAccelerator(SharedContext.Value));
    }

    /// <summary>Resolves <c>--device auto|cuda|cpu|ilgpu-cpu</c>; auto is CUDA when a GPU is present.</summary>
    public static Device Parse(string name) => name.ToLowerInvariant() switch
    {
        "auto" => CudaAvailable ? Cuda() : Cpu,
        "cuda" or "gpu" => Cuda(),
        "cpu" => Cpu,
        "ilgpu-cpu" => IlgpuCpu(),
        _ => throw new BitDeltaException($"--device: unknown device '{name}' (expected auto, cuda, cpu or ilgpu-cpu)"),
    };

    /// <summary>
    /// The launcher for an auto-grouped kernel (<c>Action&lt;Index1D, ...&gt;</c>), compiled on first use
    /// and cached for the life of the device.
    /// </summary>
    public TAction Kernel<TAction>(TAction kernel) where TAction : Delegate =>
        (TAction)kernels.GetOrAdd(kernel.Method, _ => Load(implicitlyGrouped: true, kernel));

    /// <summary>The launcher for an explicitly grouped kernel: the kernel is <c>Action&lt;T1, ...&gt;</c> and
    /// the launcher <c>Action&lt;KernelConfig, T1, ...&gt;</c>. A kernel that runs <c>griddepcontrol.wait</c> is
    /// launched so that it may start while the kernel ahead finishes (<see cref="DependentLauncher"/>).</summary>
    public TLaunch GroupedKernel<TLaunch>(Delegate kernel) where TLaunch : Delegate =>
        (TLaunch)kernels.GetOrAdd(kernel.Method, _ => Load(implicitlyGrouped: false, kernel));

    static bool ArchAtLeast(CudaAccelerator cu, int sm) => cu.Architecture is { } a && a.Major * 10 + a.Minor >= sm;

    /// <summary>On a CUDA GPU of sm_90 or newer, the launcher of an explicitly grouped kernel whose PTX waits for the
    /// kernel ahead (Kernels' <c>GridDependency.Wait</c>): a dependent launch (<see cref="DependentLaunch"/>) while
    /// <see cref="DependentLaunch.Use"/> is on, ILGPU's own launch <paramref name="plain"/> while it is off (the bench and
    /// the tests switch it between calls); null for any other kernel.</summary>
    Delegate? DependentLauncher(ILGPU.Runtime.Kernel loaded, CompiledKernel compiled, Type launchType, Delegate plain, string name)
    {
        if (accelerator is not CudaAccelerator cu || !ArchAtLeast(cu, DependentLaunch.MinArchitecture) || loaded is not CudaKernel ck
            || compiled is not PTXCompiledKernel ptx || !ptx.PTXAssembly.Contains("griddepcontrol.wait", StringComparison.Ordinal)
            || DependentLaunch.Plain.Contains(name))
            return null;
        var function = ck.FunctionPtr;
        var stream = ((CudaStream)cu.DefaultStream).StreamPtr;
        unsafe
        {
            void Launch(KernelConfig c, byte[] args)
            {
                using var bound = cu.BindScoped();
                fixed (byte* p = args)
                    CudaDriver.LaunchDependent(function, (c.GridDim.X, c.GridDim.Y, c.GridDim.Z), (c.GroupDim.X, c.GroupDim.Y, c.GroupDim.Z),
                                               c.SharedMemoryConfig.ArraySize, stream, p, args.Length, name);
                Marked(name);
                GC.KeepAlive(loaded);   // the module (and so the function) lives as long as ILGPU's kernel object
            }
            return DependentLaunch.Launcher(launchType, Launch, ptx.PTXAssembly, name, CountLaunch, plain);
        }
    }

    /// <summary>ILGPU's loaders in their steps (KernelLoaders.LoadStreamKernel / LoadAutoGroupedStreamKernel): the
    /// entry point, the compiled kernel (from <see cref="PtxCache"/> on CUDA when it has it), the driver's load, the
    /// launcher that takes a stream, bound here to the default stream. Split so that start-up can tell ILGPU's time
    /// from the driver's and the cache can stand between them.</summary>
    Delegate Load(bool implicitlyGrouped, Delegate kernel)
    {
        var method = kernel.Method;
        var args = kernel.GetType().GetGenericArguments();
        var (loaded, compiled) = LoadKernel(implicitlyGrouped, kernel);
        // ILGPU's launcher takes Action<AcceleratorStream, KernelConfig | TIndex, T1, ...>
        Type[] launchArgs = implicitlyGrouped ? args : [typeof(KernelConfig), .. args];
        var streamType = Expr.GetActionType([typeof(AcceleratorStream), .. launchArgs]);
        var streamLaunch = (Delegate)typeof(ILGPU.Runtime.Kernel).GetMethod(nameof(ILGPU.Runtime.Kernel.CreateLauncherDelegate))!
            .MakeGenericMethod(streamType).Invoke(loaded, null)!;
        string name = $"{method.DeclaringType?.Name}.{method.Name}";
        var plain = Counted(Expr.GetActionType(launchArgs), streamLaunch, name);
        return implicitlyGrouped ? plain : DependentLauncher(loaded, compiled, Expr.GetActionType(launchArgs), plain, name) ?? plain;
    }

    /// <summary>The kernel compiled (or read from the cache) and loaded by the driver, with the compiled form it came from.</summary>
    (ILGPU.Runtime.Kernel Loaded, CompiledKernel Compiled) LoadKernel(bool implicitlyGrouped, Delegate kernel)
    {
        var method = kernel.Method;
        var entry = implicitlyGrouped ? EntryPointDescription.FromImplicitlyGroupedKernel(method) : EntryPointDescription.FromExplicitlyGroupedKernel(method);
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        string? key = null;
        CompiledKernel? compiled = null;
        if (Accelerator is CudaAccelerator cu && PtxCache.Folder != null)
        {
            key = PtxCache.Key(method, implicitlyGrouped, cu.Architecture, cu.InstructionSet);
            compiled = PtxCache.TryLoad(key, SharedContext.Value, entry);
        }
        bool cached = compiled != null;
        compiled ??= Compile(entry, method);
        long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
        ILGPU.Runtime.Kernel loaded;
        try { loaded = LoadCompiled(compiled, implicitlyGrouped); }
        catch (CudaException) when (cached)
        {
            // a cache file the driver refused: compile as if it were not there, and replace it
            PtxCache.Forget(key!);
            cached = false;
            compiled = Compile(entry, method);
            loaded = LoadCompiled(compiled, implicitlyGrouped);
        }
        if (!cached && key != null) PtxCache.Store(key, (PTXCompiledKernel)compiled);
        if (loaded is CudaKernel ck && method.GetCustomAttribute<SharedBytesAttribute>() is { } shared)
            CudaDriver.AllowDynamicShared(ck.FunctionPtr, shared.Bytes, $"{method.DeclaringType?.Name}.{method.Name}");
        long t2 = System.Diagnostics.Stopwatch.GetTimestamp();
        Interlocked.Add(ref ilgpuTicks, t1 - t0);
        Interlocked.Add(ref driverTicks, t2 - t1);
        if (cached) Interlocked.Increment(ref fromCache);
        return (loaded, compiled);
    }

    /// <summary>ILGPU's compile, then on CUDA the PTX passes a kernel asks for (<see cref="PtxPasses"/>).</summary>
    CompiledKernel Compile(in EntryPointDescription entry, MethodInfo method)
    {
        var compiled = Accelerator.CompileKernel(entry);
        return compiled is PTXCompiledKernel ptx ? PtxPasses.Apply(ptx, method) : compiled;
    }

    ILGPU.Runtime.Kernel LoadCompiled(CompiledKernel compiled, bool implicitlyGrouped) =>
        implicitlyGrouped ? Accelerator.LoadAutoGroupedKernel(compiled) : Accelerator.LoadKernel(compiled);

    long launches;

    /// <summary>Kernel launches on this device so far (speed issue: launches per decode step are a cost of their own).</summary>
    public long Launches => Interlocked.Read(ref launches);

    void CountLaunch() => Interlocked.Increment(ref launches);

    /// <summary>The launcher of type <paramref name="launchType"/> (ILGPU's launcher without its stream) that counts
    /// itself in <see cref="Launches"/>, runs <paramref name="streamLaunch"/> on the default stream as it is at the call
    /// (as ILGPU's own loaders do), and marks its end in the trace when one is open.</summary>
    Delegate Counted(Type launchType, Delegate streamLaunch, string name)
    {
        var ps = launchType.GetMethod("Invoke")!.GetParameters().Select(p => Expr.Parameter(p.ParameterType, p.Name)).ToArray();
        var count = Expr.Call(Expr.Constant(this), typeof(Device).GetMethod(nameof(CountLaunch), BindingFlags.Instance | BindingFlags.NonPublic)!);
        var mark = Expr.Call(Expr.Constant(this), typeof(Device).GetMethod(nameof(Marked), BindingFlags.Instance | BindingFlags.NonPublic)!, Expr.Constant(name));
        var stream = Expr.Property(Expr.Constant(Accelerator), nameof(ILGPU.Runtime.Accelerator.DefaultStream));
        return Expr.Lambda(launchType, Expr.Block(count, Expr.Invoke(Expr.Constant(streamLaunch), [stream, .. ps]), mark), ps).Compile();
    }

    List<(string Kernel, ProfilingMarker Mark)>? trace;

    void Marked(string kernel)
    {
        if (trace != null) trace.Add((kernel, Accelerator.DefaultStream.AddProfilingMarker()));
    }

    /// <summary>From now on every launch is followed by a timing event on the stream (needs <see cref="Profiling"/>).</summary>
    public void BeginTrace()
    {
        if (!Profiling || accelerator is not ILGPU.Runtime.Cuda.CudaAccelerator)
            throw new InvalidOperationException("launch traces need Device.Profiling set before the first device and a CUDA device");
        trace = [("(start)", Accelerator.DefaultStream.AddProfilingMarker())];
    }

    /// <summary>Ends the trace: waits for the stream, then gives each launch's kernel and the GPU time from the event
    /// before it to its own (so its run and the gap before it, which includes the host's time to launch it when the GPU
    /// waits on the host).</summary>
    public List<(string Kernel, double Us)> EndTrace()
    {
        var t = trace ?? throw new InvalidOperationException("no trace is open");
        trace = null;
        Synchronize();
        var result = new List<(string, double)>(t.Count - 1);
        for (int i = 1; i < t.Count; i++) result.Add((t[i].Kernel, t[i].Mark.MeasureFrom(t[i - 1].Mark).TotalMilliseconds * 1e3));
        foreach (var (_, m) in t) m.Dispose();
        return result;
    }

    /// <summary>Number of kernels compiled so far (for tests of the cache and for start-up reports).</summary>
    public int CompiledKernels => kernels.Count;

    long ilgpuTicks, driverTicks;
    int fromCache;

    /// <summary>Wall time spent compiling and loading kernels so far (ILGPU's IL → PTX or the PTX cache's read, and the
    /// driver's module load), for start-up reports (<c>bench startup</c>).</summary>
    public TimeSpan CompileTime => IlgpuCompileTime + DriverLoadTime;

    /// <summary>The part of <see cref="CompileTime"/> in ILGPU (or reading <see cref="PtxCache"/>).</summary>
    public TimeSpan IlgpuCompileTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, Interlocked.Read(ref ilgpuTicks));

    /// <summary>The part of <see cref="CompileTime"/> in the driver (PTX to machine code, or its own cache) and the launcher.</summary>
    public TimeSpan DriverLoadTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, Interlocked.Read(ref driverTicks));

    /// <summary>Kernels whose PTX came from <see cref="PtxCache"/> so far.</summary>
    public int KernelsFromCache => Volatile.Read(ref fromCache);

    public void Synchronize() => accelerator?.Synchronize();

    public override string ToString() => Name;
}
