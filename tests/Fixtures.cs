namespace BitDeltaNative.Tests;

/// <summary>Paths of committed fixtures (copied beside the test executable) and of the shared real-world
/// files in ../shared, which a test must say plainly are absent rather than pass silently.</summary>
public static class Fixtures
{
    public static string Dir(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "fixtures", .. parts]);

    public static string Model(string name) => Dir("models", name);

    public static readonly string[] Models = ["llama-f16", "mistral-bf16", "llama3-bf16-tied"];

    /// <summary>A file under the workplace's shared folder (beside the repository), or null when absent.</summary>
    public static string? Shared(string relative)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "shared", relative);
            if (File.Exists(p)) return p;
            p = Path.Combine(d.FullName, "..", "shared", relative);
            if (File.Exists(p)) return Path.GetFullPath(p);
        }
        var env = Environment.GetEnvironmentVariable("BITDELTA_SHARED");
        if (env != null && File.Exists(Path.Combine(env, relative))) return Path.Combine(env, relative);
        return null;
    }
}
