using BitDeltaNative.Serving;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace BitDeltaNative.Tests.Serving;

public class StopTextTests
{
    /// <summary>Whatever way the text arrives in pieces, what is sent equals the text cut before the first stop string
    /// (all of it when none occurs), and nothing past a stop is ever sent.</summary>
    [Property(MaxTest = 500)]
    public Property SentTextIsTheTextCutAtTheFirstStop() =>
        Prop.ForAll(Gen.Elements("ab", "b", "ba", "aab", "xyz", "a", "\n\n").ListOf().Select(l => l.Take(3).ToArray()).ToArbitrary(),
                    Gen.Elements('a', 'b', 'x', 'y', 'z', '\n').ListOf().Select(l => new string([.. l])).ToArbitrary(),
                    Gen.Choose(1, 4).ListOf().ToArbitrary(),
                    (string[] stops, string text, List<int> cuts) =>
                    {
                        var st = new StopText(stops);
                        string sent = "";
                        bool stopped = false;
                        int at = 0, k = 0;
                        while (at < text.Length && !stopped)
                        {
                            int n = Math.Min(text.Length - at, cuts.Count > 0 ? cuts[k++ % cuts.Count] : 1);
                            var (emit, s) = st.Push(text.Substring(at, n));
                            sent += emit;
                            stopped = s;
                            at += n;
                        }
                        if (!stopped) sent += st.Flush();
                        int first = stops.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
                        return sent == (first >= 0 ? text[..first] : text) && stopped == (first >= 0);
                    });

    [Fact]
    public void HoldsBackAPossibleStartOfAStop()
    {
        var st = new StopText(["\nQuestion:"]);
        Assert.Equal(("42", false), st.Push("42\nQue"));
        Assert.Equal(("", true), st.Push("stion: 5"));
        var st2 = new StopText(["\nQuestion:"]);
        Assert.Equal(("7", false), st2.Push("7\n"));
        Assert.Equal(("\nThe end", false), st2.Push("The end"));
        Assert.Equal("", st2.Flush());
    }
}
