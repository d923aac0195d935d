namespace BitDeltaNative.Tests;

/// <summary>Paths of committed fixtures (copied beside the test executable).</summary>
public static class Fixtures
{
    public static string Dir(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "fixtures", .. parts]);

    public static string Model(string name) => Dir("models", name);

    public static readonly string[] Models = ["llama-f16", "mistral-bf16", "llama3-bf16-tied"];

    /// <summary>A path inside the repository's demo/ folder (the shipped demo pair, 18 MB, not copied beside the
    /// test binary): BITDELTA_DEMO if set (the GPU machine runs the published tests away from the repository), else
    /// found from the binary's folder upwards, else from the working directory upwards.</summary>
    public static string Demo(params string[] parts)
    {
        var env = Environment.GetEnvironmentVariable("BITDELTA_DEMO");
        if (!string.IsNullOrEmpty(env)) return Path.Combine([env, .. parts]);
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var d = new DirectoryInfo(start); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "demo", "base", "config.json")))
                    return Path.Combine([d.FullName, "demo", .. parts]);
        Assert.Fail($"demo/base/config.json not found above {AppContext.BaseDirectory} or {Directory.GetCurrentDirectory()}: run the tests inside the repository or set BITDELTA_DEMO");
        return "";
    }
}

/// <summary>Where the shared test inputs are: BITDELTA_SHARED, else a shared/ folder in an ancestor of the test
/// binary (the repository's own, or the one beside the checkout).</summary>
public static class SharedFixtures
{
    public const string Llama2Tokenizer = "fixtures/llama2/tokenizer.model";
    public const string Llama3Tokenizer = "fixtures/llama3/tokenizer.json";

    public static string Find(string relative)
    {
        var env = Environment.GetEnvironmentVariable("BITDELTA_SHARED");
        if (!string.IsNullOrEmpty(env)) return Path.Combine(env, relative);
        string? firstShared = null;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            string p = Path.Combine(d.FullName, "shared", relative);
            if (File.Exists(p)) return p;
            if (firstShared == null && Directory.Exists(Path.Combine(d.FullName, "shared"))) firstShared = p;
        }
        return firstShared ?? Path.Combine("shared", relative);
    }

    /// <summary>The bytes of a shared file, or the test is skipped with a message naming where it was looked for.</summary>
    public static byte[] ReadOrSkip(string relative)
    {
        string p = Find(relative);
        if (!File.Exists(p))
            Assert.Skip($"{p} is absent (looked in BITDELTA_SHARED, then shared/ in each ancestor of {AppContext.BaseDirectory}); this test needs it");
        return File.ReadAllBytes(p);
    }
}
