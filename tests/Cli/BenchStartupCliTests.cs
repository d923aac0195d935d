namespace BitDeltaNative.Tests.Cli;

/// <summary>`bench startup` starts the CLI again in fresh processes (from the tests: through the dotnet host and the CLI's
/// dll) and reports each step of the traced one; here on the demo's base, on the CPU.</summary>
[Collection(IlgpuCpuCollection.Name)]
public class BenchStartupCliTests
{
    [Fact]
    public void Times_fresh_processes_to_the_first_token_and_refuses_bad_options()
    {
        var r = CliRunner.Run("bench", "startup", "--model", Fixtures.Demo("base"), "--device", "cpu", "--runs", "1");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("first token (kernels, from cache, ILGPU s + driver s)", r.Out);
        Assert.Contains("kernel PTX cache: a new folder shared by the runs", r.Out);
        var row = r.Out.Split('\n').Single(l => l.StartsWith("1 |", StringComparison.Ordinal));
        // Nine cells: the generate process, then the traced one's steps; every time is a number of seconds.
        var cells = row.Split('|', StringSplitOptions.TrimEntries);
        Assert.Equal(9, cells.Length);
        Assert.All(cells.Skip(1), c => Assert.Matches(@"^\d+\.\d+ s", c));
        Assert.Matches(@"^\d+\.\d+ s \(\d+, \d+, \d+\.\d+ \+ \d+\.\d+ s\)$", cells[6]);
        var off = CliRunner.Run("bench", "startup", "--model", Fixtures.Demo("base"), "--device", "cpu", "--runs", "1", "--no-kernel-cache");
        Assert.True(off.Code == 0, off.Err);
        Assert.Contains("kernel PTX cache: off", off.Out);

        var bad = CliRunner.Run("bench", "startup", "--model", Fixtures.Demo("base"), "--device", "cpu", "--runs", "0");
        Assert.Equal(1, bad.Code);
        Assert.Contains("--runs must be at least 1", bad.Err);
        var missing = CliRunner.Run("bench", "startup", "--model", "/nonexistent-model-dir", "--device", "cpu");
        Assert.Equal(1, missing.Code);
        Assert.Contains("/nonexistent-model-dir/config.json", missing.Err);
    }
}
