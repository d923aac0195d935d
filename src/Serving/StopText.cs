using System.Text;

namespace BitDeltaNative.Serving;

/// <summary>
/// OpenAI's <c>stop</c>: generation ends where the generated text first contains one of the stop strings, and the
/// text returned ends before it. Streamed text is held back while its end could still be the start of a stop
/// string, so a client never sees text that a later token turns into a stop. Only generated text is searched.
/// </summary>
public sealed class StopText(IReadOnlyList<string> stops)
{
    readonly StringBuilder held = new();

    /// <summary>Adds newly decoded text; returns what may be sent now and whether a stop string was reached (then the
    /// text after it, and anything held, is dropped).</summary>
    public (string Emit, bool Stopped) Push(string piece)
    {
        if (stops.Count == 0) return (piece, false);
        held.Append(piece);
        string s = held.ToString();
        int first = -1;
        foreach (var stop in stops)
        {
            int at = s.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        if (first >= 0)
        {
            held.Clear();
            return (s[..first], true);
        }
        int keep = 0;
        foreach (var stop in stops)
            for (int k = Math.Min(stop.Length - 1, s.Length); k > keep; k--)
                if (s.AsSpan(s.Length - k).SequenceEqual(stop.AsSpan(0, k)))
                {
                    keep = k;
                    break;
                }
        held.Clear().Append(s, s.Length - keep, keep);
        return (s[..^keep], false);
    }

    /// <summary>At the end of generation (not by a stop string): the text held back.</summary>
    public string Flush()
    {
        string s = held.ToString();
        held.Clear();
        return s;
    }
}
