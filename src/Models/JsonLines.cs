using System.Text.Json;

namespace BitDeltaNative.Models;

/// <summary>
/// JSON-lines input files (one object per line, blank lines skipped), as `eval --data x.jsonl` and `--task` take
/// them. A line that is not JSON, not an object, or not of the expected shape is a one-line error naming file:line.
/// </summary>
public static class JsonLines
{
    /// <param name="option">the command-line option that named the file, for the missing-file error</param>
    /// <param name="expected">what a line must be, for the error, e.g. "an object with a string field \"text\""</param>
    /// <param name="parse">the item of one object, or null when it lacks what <paramref name="expected"/> says</param>
    public static List<T> Read<T>(string path, string option, string expected, Func<JsonElement, T?> parse) where T : class
    {
        if (!File.Exists(path)) throw new BitDeltaException($"{option} {path}: no such file");
        var items = new List<T>();
        int line = 0;
        foreach (var l in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(l)) continue;
            T? item;
            try
            {
                using var doc = JsonDocument.Parse(l);
                item = doc.RootElement.ValueKind == JsonValueKind.Object ? parse(doc.RootElement) : null;
            }
            catch (JsonException e) { throw new BitDeltaException($"{path}:{line}: not JSON ({e.Message.Split('.')[0]})"); }
            items.Add(item ?? throw new BitDeltaException($"{path}:{line}: expected {expected}"));
        }
        return items;
    }

    /// <summary>The string field <paramref name="name"/> of an object, or null.</summary>
    public static string? String(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
