using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace BitDeltaNative;

/// <summary>
/// Kernels' PTX kept on disk between processes (speed issue, start-up: "cache what can be cached"). ILGPU turns each
/// kernel's IL into PTX in every process that loads it (tens to hundreds of ms a kernel, the largest part of start-up
/// once the weights came through pinned buffers); the driver then compiles the PTX to machine code and keeps that in its
/// own cache (~/.nv/ComputeCache). Here the PTX ILGPU made is written once, keyed by everything that decides it, and a
/// later process gives it straight to the driver.
///
/// The key hashes: the kernel (its assembly's module version id, which a rebuild changes, its metadata token and name),
/// the module version ids of the assemblies that assembly references outside the framework (kernels inline code from
/// BitDeltaNative.Tensors, ILGPU.Algorithms …), ILGPU's own, the accelerator's architecture and instruction set, and the
/// entry kind. So any rebuild of our code or a change of ILGPU or GPU misses the cache rather than loading stale PTX.
///
/// A cached kernel is rebuilt as ILGPU's own <see cref="PTXCompiledKernel"/> (an internal constructor: reflection, checked
/// by a test so that an ILGPU upgrade that moves it fails there, not silently here) with the entry point's shared-memory
/// specification read back from the file's first line. Anything wrong with a file (its header, or the driver refusing
/// its PTX) makes the kernel compile as if there were none, and the file is rewritten.
/// </summary>
public static class PtxCache
{
    /// <summary>The folder, from BITDELTA_KERNEL_CACHE ("off" turns the cache off), else $XDG_CACHE_HOME/bitdelta/kernels,
    /// else ~/.cache/bitdelta/kernels; null when off. Settable (tests, <c>bench startup --no-kernel-cache</c>).</summary>
    public static string? Folder { get; set; } = DefaultFolder();

    static string? DefaultFolder()
    {
        var env = Environment.GetEnvironmentVariable("BITDELTA_KERNEL_CACHE");
        if (env is "off" or "0" or "none") return null;
        if (!string.IsNullOrWhiteSpace(env)) return env;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (string.IsNullOrEmpty(xdg) && string.IsNullOrEmpty(home)) return null;
        return Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(home, ".cache") : xdg, "bitdelta", "kernels");
    }

    const string Header = "// bitdelta ptx cache v1";

    static readonly ConstructorInfo? PtxKernelConstructor = typeof(PTXCompiledKernel).GetConstructor(
        BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public, null,
        [typeof(Context), typeof(EntryPoint), typeof(CompiledKernel.KernelInfo), typeof(string)], null);

    static readonly PropertyInfo? EntryPointProperty = typeof(CompiledKernel).GetProperty("EntryPoint", BindingFlags.Instance | BindingFlags.NonPublic);

    /// <summary>Whether this ILGPU still has the two internals the cache needs (a test checks it is true).</summary>
    public static bool Supported => PtxKernelConstructor != null && EntryPointProperty?.PropertyType == typeof(EntryPoint);

    /// <summary>The cache key: hex SHA-256 of what decides the kernel's PTX (see the class summary).</summary>
    public static string Key(MethodInfo kernel, bool implicitlyGrouped, CudaArchitecture architecture, CudaInstructionSet isa)
    {
        var sb = new StringBuilder(Header).Append('\n');
        var asm = kernel.Module.Assembly;
        sb.Append(asm.GetName().Name).Append(' ').Append(kernel.Module.ModuleVersionId).Append('\n');
        sb.Append(kernel.DeclaringType?.FullName).Append('.').Append(kernel.Name).Append(' ').Append(kernel.MetadataToken).Append('\n');
        sb.Append(implicitlyGrouped ? "implicit" : "explicit").Append(' ').Append(architecture).Append(' ').Append(isa).Append('\n');
        sb.Append("profiling ").Append(Device.Profiling).Append('\n');
        foreach (var name in asm.GetReferencedAssemblies().Append(typeof(Context).Assembly.GetName()).OrderBy(n => n.Name, StringComparer.Ordinal))
        {
            if (name.Name is null || name.Name.StartsWith("System", StringComparison.Ordinal) || name.Name.StartsWith("Microsoft", StringComparison.Ordinal)
                || name.Name is "netstandard" or "mscorlib") continue;
            Guid mvid;
            try { mvid = Assembly.Load(name).ManifestModule.ModuleVersionId; }
            catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException) { continue; }
            sb.Append(name.Name).Append(' ').Append(name.Version).Append(' ').Append(mvid).Append('\n');
        }
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    static string PathOf(string folder, string key) => Path.Combine(folder, key + ".ptx");

    /// <summary>The file's text for a compiled kernel: a header line with the entry's name and shared-memory
    /// specification, then the PTX.</summary>
    public static string Serialize(PTXCompiledKernel compiled)
    {
        var sm = ((EntryPoint)EntryPointProperty!.GetValue(compiled)!).SharedMemory;
        return $"{Header} {compiled.Name} {sm.StaticSize} {(sm.HasDynamicMemory ? 1 : 0)}\n{compiled.PTXAssembly}";
    }

    /// <summary>The compiled kernel a file's text describes, for <paramref name="entry"/>; null when the text is not a
    /// cache file for that entry (another kernel's, another format, cut short).</summary>
    public static PTXCompiledKernel? Deserialize(string text, Context context, in EntryPointDescription entry)
    {
        int nl = text.IndexOf('\n');
        if (nl < 0 || !text.StartsWith(Header + " ", StringComparison.Ordinal)) return null;
        var f = text[(Header.Length + 1)..nl].Split(' ');
        if (f.Length != 3 || f[0] != entry.Name || !int.TryParse(f[1], out int staticSize) || staticSize < 0 || f[2] is not ("0" or "1")) return null;
        string ptx = text[(nl + 1)..];
        // a file cut short (a full disk) lacks the entry's closing brace; the driver would refuse it, but say so here
        if (!ptx.Contains(".entry " + entry.Name, StringComparison.Ordinal) || !ptx.TrimEnd().EndsWith('}')) return null;
        var ep = new EntryPoint(entry, new SharedMemorySpecification(staticSize, f[2] == "1"), KernelSpecialization.Empty);
        return (PTXCompiledKernel)PtxKernelConstructor!.Invoke([context, ep, null, ptx]);
    }

    /// <summary>The same compiled kernel (entry point, kernel information) with other PTX.</summary>
    public static PTXCompiledKernel WithPtx(PTXCompiledKernel compiled, string ptx) =>
        (PTXCompiledKernel)(PtxKernelConstructor ?? throw new NotSupportedException("this ILGPU's PTXCompiledKernel constructor moved"))
            .Invoke([compiled.Context, (EntryPoint)EntryPointProperty!.GetValue(compiled)!, compiled.Info, ptx]);

    /// <summary>The cached kernel for <paramref name="key"/>, or null (no cache, no file, a file that does not fit).</summary>
    public static PTXCompiledKernel? TryLoad(string key, Context context, in EntryPointDescription entry)
    {
        if (Folder is not { } folder || !Supported) return null;
        string path = PathOf(folder, key);
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        return Deserialize(text, context, entry);
    }

    static int warned;

    /// <summary>Writes the kernel's file (temporary name, then rename). A cache that cannot be written costs only
    /// time: one line on stderr, once a process, and the run goes on.</summary>
    public static void Store(string key, PTXCompiledKernel compiled)
    {
        if (Folder is not { } folder || !Supported) return;
        try { AtomicFile.WriteAllText(PathOf(folder, key), Serialize(compiled)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            if (Interlocked.Exchange(ref warned, 1) == 0)
                Console.Error.WriteLine($"kernel cache {folder}: not written ({e.Message}); kernels are compiled in every process (BITDELTA_KERNEL_CACHE=off silences this)");
        }
    }

    /// <summary>Drops a file the driver refused, so the next process does not meet it again.</summary>
    public static void Forget(string key)
    {
        if (Folder is not { } folder) return;
        try { File.Delete(PathOf(folder, key)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
