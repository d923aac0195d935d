using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Cli;

/// <summary>`bitdelta serve` refusals and `bitdelta bench serve` (the load test) on the demo pair, on the CPU.</summary>
[Collection(IlgpuCpuCollection.Name)]   // redirects the process-wide console
public sealed class ServeCliTests
{
    [Fact]
    public void ServeRefusesBadArgumentsInOneLine()
    {
        string demo = Fixtures.Demo("base");
        foreach (var (args, says) in new[]
                 {
                     (new[] { "serve", "--base", demo, "--delta", "a=/nonexistent/d.safetensors", "--device", "cpu" }, "not found"),
                     (new[] { "serve", "--base", demo, "--delta", "/nonexistent/d.safetensors", "--device", "cpu" }, "not found"),
                     (new[] { "serve", "--base", demo, "--host", "not-an-ip", "--port", "0", "--device", "cpu" }, "--host"),
                     (new[] { "serve", "--base", demo, "--max-batch", "0", "--port", "0", "--device", "cpu" }, "--max-batch"),
                     (new[] { "serve", "--base", demo, "--context", "100000", "--port", "0", "--device", "cpu" }, "--context"),
                     (new[] { "serve", "--base", demo, "--deltas", "/nonexistent-folder", "--device", "cpu" }, "--deltas"),
                 })
        {
            var r = CliRunner.Run(args);
            Assert.Equal(1, r.Code);
            Assert.Contains(says, r.Err);
            Assert.Single(r.Err.Trim().Split('\n'), l => l.StartsWith("bitdelta: error:"));
        }
    }

    [Fact]
    public void BenchServeRunsTheLoadTestWithoutErrors()
    {
        using var dir = new TempDir();
        string a = dir.File("a.safetensors");
        Compressor.Compress(Fixtures.Demo("base"), Fixtures.Demo("finetuned"), a);
        var r = CliRunner.Run("bench", "serve", "--base", Fixtures.Demo("base"), "--delta", $"a={a}", "--with-base", "--clients", "1,3",
                              "--duration", "1", "--max-tokens", "6", "--prompt-tokens", "5", "--max-batch", "4", "--device", "cpu");
        Assert.True(r.Code == 0, r.Err);
        var rows = r.Out.Split('\n').Where(l => l.StartsWith("│ 1 ") || l.StartsWith("│ 3 ")).ToList();
        Assert.Equal(2, rows.Count);
        foreach (var row in rows)
        {
            var cells = row.Split('│', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            Assert.Equal("2", cells[1]);                 // tenants: a and base
            Assert.True(int.Parse(cells[2]) > 0);        // requests
            Assert.Equal("0", cells[3]);                 // errors
        }
    }
}
