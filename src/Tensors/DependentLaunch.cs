using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Runtime;
using Expr = System.Linq.Expressions.Expression;

namespace BitDeltaNative;

/// <summary>
/// Kernel launches that may overlap the kernel ahead of them in the stream: Hopper's programmatic dependent launch (CUDA
/// Programming Guide, "Programmatic Dependent Launch and Synchronization"; PTX ISA §9.7.13.13 <c>griddepcontrol</c>,
/// sm_90). A decode step of one sequence is ~200 launches of 5–70 µs, and each linear's grid spends its first µs getting
/// its loads out and its last µs on a few blocks while most multiprocessors idle (GemvOne at 4096² takes 13.5 µs for
/// 8.9 µs of bytes; bench/NOTES.md). Launched this way, a kernel's blocks start as the one ahead finishes (once all of
/// its blocks have run <c>griddepcontrol.launch_dependents</c>), send out their loads of weights (which no kernel writes),
/// then wait in <c>griddepcontrol.wait</c> until the kernel ahead has finished and its writes are visible.
///
/// ILGPU 1.5.3 launches through <c>cuLaunchKernel</c>, which takes no attributes, so these launches go through
/// <c>cuLaunchKernelEx</c> (<see cref="CudaDriver.LaunchDependent"/>) with the parameters packed as ILGPU packs them for
/// its PTX: each parameter at its natural alignment, an <see cref="ArrayView{T}"/> as its element address and length (16
/// bytes, ILGPU's <c>ViewImplementation</c>), a struct's fields in order with its views so replaced. The layout is checked
/// against the kernel's PTX parameter list when the kernel is loaded, so a layout ILGPU changes is an error at load, not
/// wrong arguments. Which kernels go so is the kernel's own say: Device.GroupedKernel launches dependent every explicitly
/// grouped kernel whose PTX waits (Kernels' GridDependency.Wait), and no other.
/// </summary>
public static class DependentLaunch
{
    /// <summary>Launch the kernels that wait for the kernel ahead (their PTX has <c>griddepcontrol.wait</c>) as dependent
    /// launches on GPUs that have them (sm_90 and newer); the bench turns it off to compare (<c>--no-pdl</c>). Read at
    /// each launch.</summary>
    public static bool Use { get; set; } = true;

    /// <summary>Kernels (Type.Method) launched the plain way although their PTX waits, from the comma-separated
    /// BITDELTA_PLAIN_LAUNCHES: to measure one kernel's dependent launch against its plain one in the same process
    /// (bench/NOTES.md). Read when a kernel is loaded.</summary>
    public static IReadOnlySet<string> Plain { get; } =
        (Environment.GetEnvironmentVariable("BITDELTA_PLAIN_LAUNCHES") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet();

    /// <summary>The architectures that run <c>griddepcontrol</c> (PTX ISA: sm_90 or higher).</summary>
    public const int MinArchitecture = 90;

    /// <summary>One value of the packed parameters: where it goes and how it is written.</summary>
    internal readonly record struct Leaf(int Offset, int Bytes, Func<Expr, Expr, Expr> Write, Expr Source);

    /// <summary>Offsets of each top-level parameter (its start and size), the leaves to write, the total size.</summary>
    internal sealed record Layout((int Offset, int Bytes)[] Parameters, List<Leaf> Leaves, int Bytes);

    /// <summary>The packed layout of parameters <paramref name="values"/> (expressions of the kernel's parameter types).</summary>
    internal static Layout Of(Expr[] values)
    {
        var leaves = new List<Leaf>();
        var tops = new (int, int)[values.Length];
        int offset = 0;
        for (int i = 0; i < values.Length; i++)
        {
            var (align, bytes) = Shape(values[i].Type);
            offset = Align(offset, align);
            Place(values[i], offset, leaves);
            tops[i] = (offset, bytes);
            offset += bytes;
        }
        return new Layout(tops, leaves, offset);
    }

    static int Align(int offset, int align) => (offset + align - 1) / align * align;

    static bool IsView(Type t) => t.IsGenericType && t.GetGenericTypeDefinition() == typeof(ArrayView<>);

    static readonly Type[] Scalars = [typeof(byte), typeof(sbyte), typeof(short), typeof(ushort), typeof(int), typeof(uint),
                                      typeof(long), typeof(ulong), typeof(float), typeof(double)];

    /// <summary>Alignment and size of a parameter type as ILGPU's PTX backend lays it out.</summary>
    internal static (int Align, int Bytes) Shape(Type t)
    {
        if (IsView(t)) return (8, 16);
        if (Scalars.Contains(t)) { int n = Marshal(t); return (n, n); }
        if (t.IsValueType && !t.IsPrimitive && !t.IsEnum)
        {
            int align = 1, offset = 0;
            foreach (var f in Fields(t))
            {
                var (a, n) = Shape(f.FieldType);
                offset = Align(offset, a) + n;
                align = Math.Max(align, a);
            }
            return (align, Align(offset, align));
        }
        throw new NotSupportedException($"dependent launch: a kernel parameter of type {t.Name} (views, numbers and structs of them only)");
    }

    static int Marshal(Type t) => System.Runtime.InteropServices.Marshal.SizeOf(t);

    /// <summary>A struct's instance fields in declaration order (sequential layout, as ILGPU maps it).</summary>
    static IEnumerable<FieldInfo> Fields(Type t) =>
        t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic).OrderBy(f => f.MetadataToken);

    static void Place(Expr value, int offset, List<Leaf> leaves)
    {
        var t = value.Type;
        if (IsView(t))
        {
            var write = typeof(DependentLaunch).GetMethod(nameof(WriteView), BindingFlags.Static | BindingFlags.NonPublic)!.MakeGenericMethod(t.GetGenericArguments()[0]);
            leaves.Add(new Leaf(offset, 16, (buf, at) => Expr.Call(write, buf, at, value), value));
            return;
        }
        if (Scalars.Contains(t))
        {
            var write = typeof(DependentLaunch).GetMethod(nameof(WriteValue), BindingFlags.Static | BindingFlags.NonPublic)!.MakeGenericMethod(t);
            leaves.Add(new Leaf(offset, Marshal(t), (buf, at) => Expr.Call(write, buf, at, value), value));
            return;
        }
        int inner = 0;
        foreach (var f in Fields(t))
        {
            var (a, n) = Shape(f.FieldType);
            inner = Align(inner, a);
            Place(Expr.Field(value, f), offset + inner, leaves);
            inner += n;
        }
    }

    static void WriteView<T>(byte[] buf, int at, ArrayView<T> view) where T : unmanaged
    {
        long address = view.IsValid ? view.LoadEffectiveAddressAsPtr().ToInt64() : 0;
        Unsafe.WriteUnaligned(ref buf[at], address);
        Unsafe.WriteUnaligned(ref buf[at + 8], view.Length);
    }

    static void WriteValue<T>(byte[] buf, int at, T value) where T : unmanaged => Unsafe.WriteUnaligned(ref buf[at], value);

    static readonly Regex EntryParams = new(@"\.entry\s+\S+\s*\(([^)]*)\)", RegexOptions.Singleline);
    static readonly Regex Param = new(@"\.param\s+(?:\.align\s+(\d+)\s+)?\.([busf])(\d+)\s+\S+?(?:\[(\d+)\])?\s*$");

    /// <summary>The offsets and sizes of a PTX kernel's parameters, as the driver reads them from a packed buffer (each
    /// at its own alignment, PTX ISA §5.1.6.1 kernel parameters).</summary>
    public static (int Offset, int Bytes)[] PtxParameters(string ptx)
    {
        var m = EntryParams.Match(ptx);
        if (!m.Success) throw new NotSupportedException("dependent launch: no .entry with a parameter list in the PTX");
        var result = new List<(int, int)>();
        int offset = 0;
        foreach (var raw in m.Groups[1].Value.Split(','))
        {
            var line = raw.Trim();
            if (line.Length == 0) continue;
            var p = Param.Match(line);
            if (!p.Success) throw new NotSupportedException($"dependent launch: a PTX parameter not understood: '{line}'");
            int unit = int.Parse(p.Groups[3].Value) / 8;
            int count = p.Groups[4].Success ? int.Parse(p.Groups[4].Value) : 1;
            int align = p.Groups[1].Success ? int.Parse(p.Groups[1].Value) : unit;
            offset = Align(offset, align);
            result.Add((offset, unit * count));
            offset += unit * count;
        }
        return [.. result];
    }

    /// <summary>Throws unless <paramref name="layout"/> puts every parameter where the PTX entry expects it.</summary>
    internal static void Check(Layout layout, string ptx, string kernel)
    {
        var want = PtxParameters(ptx);
        if (want.Length != layout.Parameters.Length || !want.SequenceEqual(layout.Parameters))
            throw new NotSupportedException($"{kernel}: dependent launch packs its parameters as [{string.Join(", ", layout.Parameters)}], " +
                                            $"its PTX declares [{string.Join(", ", want)}]");
    }

    /// <summary>The launcher of type <paramref name="launchType"/> (<c>Action&lt;KernelConfig, T1, …&gt;</c>): packs
    /// T1… into one buffer and hands it to <paramref name="launch"/>, under a lock (one buffer a kernel); while
    /// <see cref="Use"/> is off it calls <paramref name="plain"/> (ILGPU's launch) instead, when given.</summary>
    internal static Delegate Launcher(Type launchType, Action<KernelConfig, byte[]> launch, string ptx, string kernel, Action before, Delegate? plain = null)
    {
        var ps = launchType.GetMethod("Invoke")!.GetParameters().Select(p => Expr.Parameter(p.ParameterType, p.Name)).ToArray();
        // a kernel that never waits would read what the kernel ahead is still writing
        if (!ptx.Contains("griddepcontrol.wait", StringComparison.Ordinal))
            throw new NotSupportedException($"{kernel}: launched dependent, but its PTX has no griddepcontrol.wait (Kernels' GridDependency.Wait)");
        var layout = Of(ps[1..]);
        Check(layout, ptx, kernel);
        var buffer = new byte[Math.Max(layout.Bytes, 8)];
        var gate = new object();
        var buf = Expr.Constant(buffer);
        var body = new List<Expr> { Expr.Invoke(Expr.Constant(before)) };
        body.AddRange(layout.Leaves.Select(l => l.Write(buf, Expr.Constant(l.Offset))));
        body.Add(Expr.Invoke(Expr.Constant(launch), ps[0], buf));
        var enter = typeof(Monitor).GetMethod(nameof(Monitor.Enter), [typeof(object)])!;
        var exit = typeof(Monitor).GetMethod(nameof(Monitor.Exit), [typeof(object)])!;
        Expr locked = Expr.Block(Expr.Call(enter, Expr.Constant(gate)), Expr.TryFinally(Expr.Block(body), Expr.Call(exit, Expr.Constant(gate))));
        if (plain != null)
            locked = Expr.IfThenElse(Expr.Property(null, typeof(DependentLaunch), nameof(Use)), locked, Expr.Invoke(Expr.Constant(plain), ps));
        return Expr.Lambda(launchType, locked, ps).Compile();
    }
}
