using BitDeltaNative.Models;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Cli;

/// <summary>`bitdelta inspect DELTA --plot FILE.png` end to end: a delta of the tiny Llama fixture and its
/// fine-tune, the picture decoded back.</summary>
[Collection(IlgpuCpuCollection.Name)]   // CliRunner redirects the process-wide console
public class PlotCliTests
{
    [Fact]
    public void Inspect_plot_draws_the_scales_and_overwrites_nothing()
    {
        using var dir = new TempDir();
        string delta = dir.File("delta.safetensors"), png = dir.File("scales.png");
        Compressor.Compress(Fixtures.Model("llama-f16"), Fixtures.Dir("bitdelta", "llama-f16"), delta);

        var run = CliRunner.Run("inspect", delta, "--plot", png);
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("14 matrices binarized", run.Out);
        Assert.Contains($"wrote {png}: 1000x", run.Out);
        var bytes = File.ReadAllBytes(png);
        var img = PngDecoder.Decode(bytes);
        Assert.Equal(1000, img.Width);
        Assert.InRange(img.Height, 500, 1000);
        Assert.Contains($"{img.Width}x{img.Height} PNG", run.Out);
        // Not blank: white background, black and grey text, the seven series colours and the viridis cells.
        var colours = new HashSet<(byte, byte, byte)>();
        for (int y = 0; y < img.Height; y++) for (int x = 0; x < img.Width; x++) colours.Add(img.Rgb(x, y));
        Assert.True(colours.Count >= 20, $"{colours.Count} distinct colours");
        Assert.Contains(((byte)255, (byte)255, (byte)255), colours);
        foreach (var c in BitDeltaNative.Charts.LineChart.Palette.Take(7)) Assert.Contains((c.R, c.G, c.B), colours);
        // The title's top-left corner has ink (the ×2 "B" of "BitDelta"), and the bottom margin is clear.
        Assert.NotEqual(((byte)255, (byte)255, (byte)255), img.Rgb(17, 17));
        for (int x = 0; x < img.Width; x++) Assert.Equal(((byte)255, (byte)255, (byte)255), img.Rgb(x, img.Height - 1));

        var again = CliRunner.Run("inspect", delta, "--plot", png);
        Assert.Equal(1, again.Code);
        Assert.Contains("exists already", again.Err);
        Assert.Single(again.Err.Trim().Split('\n'));
        Assert.Equal(bytes, File.ReadAllBytes(png));

        var notDelta = CliRunner.Run("inspect", Fixtures.Model("llama-f16"), "--plot", dir.File("m.png"));
        Assert.Equal(1, notDelta.Code);
        Assert.Contains("is not a delta file", notDelta.Err);
        var noFolder = CliRunner.Run("inspect", delta, "--plot", Path.Combine(dir.Path, "nope", "s.png"));
        Assert.Equal(1, noFolder.Code);
        Assert.Contains("does not exist", noFolder.Err);
        var intoInput = CliRunner.Run("inspect", delta, "--plot", delta);
        Assert.Equal(1, intoInput.Code);
        var notPng = CliRunner.Run("inspect", delta, "--plot", dir.File("s.jpg"));
        Assert.Equal(1, notPng.Code);
        Assert.Contains(".png", notPng.Err);
        Assert.Equal(["delta.safetensors", "scales.png"], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order());
    }
}
