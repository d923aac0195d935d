namespace BitDeltaNative.Tests;

/// <summary>Paths of committed fixtures (copied beside the test executable).</summary>
public static class Fixtures
{
    public static string Dir(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "fixtures", .. parts]);

    public static string Model(string name) => Dir("models", name);

    public static readonly string[] Models = ["llama-f16", "mistral-bf16", "llama3-bf16-tied"];
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
