using System.Globalization;
using System.Text;
using System.Text.Json;

namespace BitDeltaNative.Serving;

/// <summary>
/// The part of Jinja2 that Hugging Face chat templates use (tokenizer_config.json's <c>chat_template</c>), rendered as
/// transformers renders them: <c>ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)</c> with
/// <c>raise_exception</c>. Statements: if / elif / else, for (with <c>loop.*</c>, an <c>if</c> filter and <c>else</c>),
/// set (names and namespace attributes). Expressions: literals, lists, dicts, attributes, subscripts and slices,
/// calls, filters, tests, arithmetic, comparison, <c>in</c>, <c>and</c>/<c>or</c>/<c>not</c>, <c>~</c>, and
/// <c>a if c else b</c>, with Python's semantics for truth, equality and printing. Macros, includes and
/// <c>{% filter %}</c> are not supported: such a template is a clear error at load, not a wrong prompt.
/// Checked against jinja2 itself on real templates (tests/fixtures/chat-templates.json, tools/oracle/chat_templates.py).
/// </summary>
public sealed class JinjaTemplate
{
    readonly Action<Scope, StringBuilder> body;

    JinjaTemplate(Action<Scope, StringBuilder> body) => this.body = body;

    /// <summary>A value that was never defined: prints as nothing, is false, and is an error to look into.</summary>
    public sealed class Undefined
    {
        public static readonly Undefined Value = new();
        public override string ToString() => "";
    }

    /// <summary><c>namespace(...)</c>: the one mutable object templates have, so a loop can set what outlives it.</summary>
    sealed class Namespace : Dictionary<string, object?>;

    public static JinjaTemplate Parse(string source) => new(new Parser(Lex(source)).Template());

    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var globals = new Dictionary<string, object?>(variables);
        globals.TryAdd("raise_exception", (Func<List<object?>, object?>)(a => throw new BitDeltaException($"chat template: {Str(a.FirstOrDefault())}")));
        globals.TryAdd("namespace", (Func<List<object?>, object?>)(a =>
        {
            var ns = new Namespace();
            foreach (var kv in a.OfType<KeyValuePair<string, object?>>()) ns[kv.Key] = kv.Value;
            return ns;
        }));
        globals.TryAdd("range", (Func<List<object?>, object?>)(a =>
        {
            long from = a.Count > 1 ? Int(a[0]) : 0, to = Int(a[a.Count > 1 ? 1 : 0]);
            var list = new List<object?>();
            for (long i = from; i < to; i++) list.Add(i);
            return list;
        }));
        globals.TryAdd("strftime_now", (Func<List<object?>, object?>)(a => DateTime.Now.ToString(PyDateFormat(Str(a[0])), CultureInfo.InvariantCulture)));
        var sb = new StringBuilder();
        body(new Scope(globals), sb);
        return sb.ToString();
    }

    /// <summary>A JSON value as a template value: objects → dictionaries, arrays → lists, integers → long.</summary>
    public static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().ToDictionary(p => p.Name, p => FromJson(p.Value)),
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    // ---- lexing: text and tags, with Jinja's whitespace control, trim_blocks and lstrip_blocks ----

    enum Kind { Text, Output, Statement }

    record struct Piece(Kind Kind, string Text, int Line);

    static List<Piece> Lex(string src)
    {
        var pieces = new List<Piece>();
        int i = 0;
        bool trimNextNewline = false, stripNextLeading = false;
        while (i < src.Length)
        {
            int open = IndexOfTag(src, i);
            string text = src[i..(open < 0 ? src.Length : open)];
            if (stripNextLeading) text = text.TrimStart();
            else if (trimNextNewline && text.StartsWith('\n')) text = text[1..];
            else if (trimNextNewline && text.StartsWith("\r\n")) text = text[2..];
            if (open < 0)
            {
                pieces.Add(new Piece(Kind.Text, text, Line(src, i)));
                break;
            }
            char k = src[open + 1];
            bool minusLeft = open + 2 < src.Length && src[open + 2] == '-';
            if (minusLeft) text = text.TrimEnd();
            else if (k is '%' or '#')
            {
                // lstrip_blocks: spaces and tabs between the start of a line (in the source) and a block tag go.
                int j = open - 1;
                while (j >= 0 && src[j] is ' ' or '\t') j--;
                if (j < 0 || src[j] == '\n') text = text[..^Math.Min(text.Length, open - 1 - j)];
            }
            pieces.Add(new Piece(Kind.Text, text, Line(src, i)));
            string close = k == '{' ? "}}" : k == '%' ? "%}" : "#}";
            int start = open + (minusLeft ? 3 : 2);
            int end = FindClose(src, start, close);
            if (end < 0) throw new BitDeltaException($"chat template: line {Line(src, open)}: '{src.Substring(open, 2)}' is never closed");
            bool minusRight = end > start && src[end - 1] == '-';
            string inner = src[start..(minusRight ? end - 1 : end)];
            if (k == '{') pieces.Add(new Piece(Kind.Output, inner, Line(src, open)));
            else if (k == '%') pieces.Add(new Piece(Kind.Statement, inner, Line(src, open)));
            i = end + 2;
            stripNextLeading = minusRight;
            trimNextNewline = k is '%' or '#';
        }
        return pieces;
    }

    static int IndexOfTag(string s, int from)
    {
        for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
            if (s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>The closing delimiter, skipping string literals inside the tag.</summary>
    static int FindClose(string s, int from, string close)
    {
        char quote = '\0';
        for (int i = from; i < s.Length - 1; i++)
        {
            char c = s[i];
            if (quote != '\0')
            {
                if (c == '\\') i++;
                else if (c == quote) quote = '\0';
            }
            else if (close != "#}" && c is '\'' or '"') quote = c;
            else if (c == close[0] && s[i + 1] == close[1]) return i;
        }
        return -1;
    }

    static int Line(string s, int at) => 1 + s.AsSpan(0, Math.Min(at, s.Length)).Count('\n');

    // ---- expression tokens ----

    record struct Tok(char Type, string Text);   // Type: n(ame) s(tring) i(nt) f(loat) o(perator) e(nd)

    static List<Tok> Tokens(string s, int line)
    {
        var list = new List<Tok>();
        int i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            if (char.IsWhiteSpace(c)) { i++; continue; }
            if (char.IsLetter(c) || c == '_')
            {
                int j = i;
                while (j < s.Length && (char.IsLetterOrDigit(s[j]) || s[j] == '_')) j++;
                list.Add(new Tok('n', s[i..j]));
                i = j;
            }
            else if (char.IsDigit(c))
            {
                int j = i;
                while (j < s.Length && (char.IsDigit(s[j]) || s[j] == '_')) j++;
                bool isFloat = j + 1 < s.Length && s[j] == '.' && char.IsDigit(s[j + 1]);
                if (isFloat) for (j++; j < s.Length && char.IsDigit(s[j]); j++) { }
                list.Add(new Tok(isFloat ? 'f' : 'i', s[i..j].Replace("_", "")));
                i = j;
            }
            else if (c is '\'' or '"')
            {
                var sb = new StringBuilder();
                int j = i + 1;
                for (; j < s.Length && s[j] != c; j++)
                {
                    if (s[j] != '\\' || j + 1 >= s.Length) { sb.Append(s[j]); continue; }
                    char e = s[++j];
                    sb.Append(e switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '0' => '\0', _ => e });
                }
                if (j >= s.Length) throw new BitDeltaException($"chat template: line {line}: unterminated string");
                list.Add(new Tok('s', sb.ToString()));
                i = j + 1;
            }
            else
            {
                string two = i + 1 < s.Length ? s.Substring(i, 2) : "";
                string op = two is "==" or "!=" or "<=" or ">=" or "//" or "**" ? two : c.ToString();
                if ("()[]{}.,:|~+-*/%<>=!".IndexOf(op[0]) < 0) throw new BitDeltaException($"chat template: line {line}: unexpected '{c}'");
                list.Add(new Tok('o', op));
                i += op.Length;
            }
        }
        list.Add(new Tok('e', ""));
        return list;
    }

    // ---- scopes ----

    sealed class Scope(Dictionary<string, object?> vars, Scope? parent = null)
    {
        readonly Dictionary<string, object?> vars = vars;

        public object? Get(string name)
        {
            for (var s = this; s != null; s = s.parent)
                if (s.vars.TryGetValue(name, out var v)) return v;
            return Undefined.Value;
        }

        public void Set(string name, object? value) => vars[name] = value;
        public Scope Child() => new([], this);
        readonly Scope? parent = parent;
    }

    // ---- parser: statements to closures over a scope ----

    sealed class Parser(List<Piece> pieces)
    {
        int at;

        public Action<Scope, StringBuilder> Template()
        {
            var (body, end) = Block();
            if (end != null) throw Error(end.Value, $"'{end.Value.Text.Trim()}' without its opening tag");
            return body;
        }

        /// <summary>Parses until a statement that closes a block (endif, else, elif, endfor); returns it unconsumed-in-effect.</summary>
        (Action<Scope, StringBuilder> Body, Piece? End) Block(params string[] enders)
        {
            var parts = new List<Action<Scope, StringBuilder>>();
            while (at < pieces.Count)
            {
                var p = pieces[at++];
                switch (p.Kind)
                {
                    case Kind.Text:
                        if (p.Text.Length > 0) { string t = p.Text; parts.Add((_, sb) => sb.Append(t)); }
                        break;
                    case Kind.Output:
                    {
                        var e = new Expr(Tokens(p.Text, p.Line), p.Line).Whole();
                        parts.Add((s, sb) => sb.Append(Str(e(s))));
                        break;
                    }
                    default:
                    {
                        var toks = Tokens(p.Text, p.Line);
                        string word = toks[0].Type == 'n' ? toks[0].Text : "";
                        if (enders.Contains(word)) return (Seq(parts), p);
                        parts.Add(word switch
                        {
                            "if" => If(toks, p),
                            "for" => For(toks, p),
                            "set" => Set(toks, p),
                            _ => throw Error(p, word is "endif" or "endfor" or "else" or "elif"
                                ? $"'{word}' without its opening tag" : $"'{word}' is not supported (if, for and set are)"),
                        });
                        break;
                    }
                }
            }
            if (enders.Length > 0) throw new BitDeltaException($"chat template: missing '{{% {enders[^1]} %}}' at the end");
            return (Seq(parts), null);
        }

        static Action<Scope, StringBuilder> Seq(List<Action<Scope, StringBuilder>> parts) => (s, sb) =>
        {
            foreach (var p in parts) p(s, sb);
        };

        Action<Scope, StringBuilder> If(List<Tok> toks, Piece p)
        {
            var branches = new List<(Func<Scope, object?>? Cond, Action<Scope, StringBuilder> Body)>();
            var cond = new Expr(toks, p.Line, 1).Whole();
            while (true)
            {
                var (body, end) = Block("elif", "else", "endif");
                branches.Add((cond, body));
                var et = Tokens(end!.Value.Text, end.Value.Line);
                if (et[0].Text == "endif") break;
                if (et[0].Text == "else")
                {
                    var (elseBody, e2) = Block("endif");
                    branches.Add((null, elseBody));
                    break;
                }
                cond = new Expr(et, end.Value.Line, 1).Whole();
            }
            return (s, sb) =>
            {
                foreach (var (c, b) in branches)
                    if (c == null || Truthy(c(s))) { b(s, sb); return; }
            };
        }

        Action<Scope, StringBuilder> For(List<Tok> toks, Piece p)
        {
            var names = new List<string>();
            int i = 1;
            while (toks[i].Type == 'n' && toks[i].Text != "in")
            {
                names.Add(toks[i++].Text);
                if (toks[i].Text == ",") i++;
            }
            if (names.Count == 0 || toks[i].Text != "in") throw Error(p, "expected 'for NAME in EXPR'");
            var ex = new Expr(toks, p.Line, i + 1);
            var seq = ex.Ternary(allowIf: false);
            Func<Scope, object?>? filter = null;
            if (ex.Peek.Type == 'n' && ex.Peek.Text == "if") { ex.Next(); filter = ex.Or(); }
            ex.End();
            var (body, end) = Block("else", "endfor");
            Action<Scope, StringBuilder>? orElse = null;
            if (Tokens(end!.Value.Text, end.Value.Line)[0].Text == "else") orElse = Block("endfor").Body;
            return (s, sb) =>
            {
                var items = Iterate(seq(s)).ToList();
                if (filter != null)
                    items = items.Where(v => { var f = s.Child(); Bind(f, names, v); return Truthy(filter(f)); }).ToList();
                if (items.Count == 0) { orElse?.Invoke(s, sb); return; }
                for (int k = 0; k < items.Count; k++)
                {
                    var inner = s.Child();
                    Bind(inner, names, items[k]);
                    inner.Set("loop", new Dictionary<string, object?>
                    {
                        ["index"] = (long)k + 1, ["index0"] = (long)k, ["first"] = k == 0, ["last"] = k == items.Count - 1,
                        ["length"] = (long)items.Count, ["revindex"] = (long)(items.Count - k), ["revindex0"] = (long)(items.Count - k - 1),
                        ["previtem"] = k > 0 ? items[k - 1] : Undefined.Value, ["nextitem"] = k + 1 < items.Count ? items[k + 1] : Undefined.Value,
                    });
                    body(inner, sb);
                }
            };
        }

        static void Bind(Scope s, List<string> names, object? v)
        {
            if (names.Count == 1) { s.Set(names[0], v); return; }
            var parts = Iterate(v).ToList();
            if (parts.Count != names.Count) throw new BitDeltaException($"chat template: cannot unpack {parts.Count} values into {names.Count} names");
            for (int i = 0; i < names.Count; i++) s.Set(names[i], parts[i]);
        }

        Action<Scope, StringBuilder> Set(List<Tok> toks, Piece p)
        {
            if (toks[1].Type != 'n') throw Error(p, "expected 'set NAME = EXPR'");
            string name = toks[1].Text;
            string? attr = null;
            int i = 2;
            if (toks[2].Text == ".") { attr = toks[3].Text; i = 4; }
            if (toks[i].Text != "=") throw Error(p, "block 'set' (without '=') is not supported");
            var value = new Expr(toks, p.Line, i + 1).Whole();
            return (s, sb) =>
            {
                var v = value(s);
                if (attr == null) s.Set(name, v);
                else if (s.Get(name) is Namespace ns) ns[attr] = v;
                else throw new BitDeltaException($"chat template: '{name}' is not a namespace, so '{name}.{attr}' cannot be set");
            };
        }

        static BitDeltaException Error(Piece p, string message) => new($"chat template: line {p.Line}: {message}");
    }

    // ---- expressions ----

    sealed class Expr(List<Tok> toks, int line, int start = 0)
    {
        int i = start;
        public Tok Peek => toks[i];
        public Tok Next() => toks[i++];
        bool Is(string op) => toks[i].Type is 'o' or 'n' && toks[i].Text == op;

        void Expect(string op)
        {
            if (!Is(op)) throw Error($"expected '{op}', found '{toks[i].Text}'");
            i++;
        }

        public void End()
        {
            if (toks[i].Type != 'e') throw Error($"unexpected '{toks[i].Text}'");
        }

        BitDeltaException Error(string m) => new($"chat template: line {line}: {m}");

        public Func<Scope, object?> Whole()
        {
            var e = Ternary();
            End();
            return e;
        }

        public Func<Scope, object?> Ternary(bool allowIf = true)
        {
            var a = Or();
            if (!allowIf || !Is("if")) return a;
            i++;
            var c = Or();
            Func<Scope, object?> b = _ => Undefined.Value;
            if (Is("else")) { i++; b = Ternary(); }
            return s => Truthy(c(s)) ? a(s) : b(s);
        }

        public Func<Scope, object?> Or()
        {
            var a = And();
            while (Is("or")) { i++; var l = a; var r = And(); a = s => l(s) is var x && Truthy(x) ? x : r(s); }
            return a;
        }

        Func<Scope, object?> And()
        {
            var a = Not();
            while (Is("and")) { i++; var l = a; var r = Not(); a = s => l(s) is var x && !Truthy(x) ? x : r(s); }
            return a;
        }

        Func<Scope, object?> Not()
        {
            if (!Is("not")) return Compare();
            i++;
            var a = Not();
            return s => !Truthy(a(s));
        }

        Func<Scope, object?> Compare()
        {
            var a = Concat();
            while (true)
            {
                string? op = toks[i].Type == 'o' && toks[i].Text is "==" or "!=" or "<" or ">" or "<=" or ">=" ? toks[i].Text
                    : Is("in") ? "in" : Is("not") && toks[i + 1].Text == "in" ? "not in" : null;
                if (op == null) return a;
                i += op == "not in" ? 2 : 1;
                var l = a;
                var r = Concat();
                a = op switch
                {
                    "==" => s => Equal(l(s), r(s)),
                    "!=" => s => !Equal(l(s), r(s)),
                    "in" => s => Contains(r(s), l(s)),
                    "not in" => s => !Contains(r(s), l(s)),
                    _ => s => Order(l(s), r(s), op),
                };
            }
        }

        Func<Scope, object?> Concat()
        {
            var a = Sum();
            while (Is("~")) { i++; var l = a; var r = Sum(); a = s => Str(l(s)) + Str(r(s)); }
            return a;
        }

        Func<Scope, object?> Sum() => Arithmetic(Product, "+", "-");

        Func<Scope, object?> Product() => Arithmetic(Unary, "*", "/", "//", "%");

        /// <summary>One left-associative level of arithmetic: operands from <paramref name="operand"/>, joined by <paramref name="ops"/>.</summary>
        Func<Scope, object?> Arithmetic(Func<Func<Scope, object?>> operand, params string[] ops)
        {
            var a = operand();
            while (toks[i].Type == 'o' && ops.Contains(toks[i].Text))
            {
                string op = toks[i++].Text;
                var l = a;
                var r = operand();
                a = s => Arith(op, l(s), r(s));
            }
            return a;
        }

        Func<Scope, object?> Unary()
        {
            if (Is("-")) { i++; var a = Unary(); return s => Arith("-", 0L, a(s)); }
            if (Is("+")) { i++; return Unary(); }
            return Filtered();
        }

        Func<Scope, object?> Filtered()
        {
            var a = Postfix(Primary());
            while (true)
            {
                if (Is("|"))
                {
                    i++;
                    string name = Next().Text;
                    var args = Is("(") ? Args() : [];
                    var l = a;
                    a = s => Filter(name, l(s), Values(args, s));
                }
                else if (Is("is"))
                {
                    i++;
                    bool negate = false;
                    if (Is("not")) { i++; negate = true; }
                    string test = Next().Text;
                    var args = Is("(") ? Args() : [];
                    var l = a;
                    a = s => Test(test, l(s), Values(args, s)) != negate;
                }
                else return a;
            }
        }

        static List<object?> Values(List<Func<Scope, object?>> args, Scope s) =>
            args.Select(f => f(s)).Select(v => v is KeyValuePair<string, object?> kv ? kv.Value : v).ToList();

        List<Func<Scope, object?>> Args()
        {
            Expect("(");
            var list = new List<Func<Scope, object?>>();
            while (!Is(")"))
            {
                // A keyword argument becomes a (name, value) pair: namespace(x=1) reads them; elsewhere they count by position.
                if (toks[i].Type == 'n' && toks[i + 1].Text == "=")
                {
                    string key = toks[i].Text;
                    i += 2;
                    var value = Ternary();
                    list.Add(s => new KeyValuePair<string, object?>(key, value(s)));
                }
                else list.Add(Ternary());
                if (!Is(")")) Expect(",");
            }
            i++;
            return list;
        }

        Func<Scope, object?> Postfix(Func<Scope, object?> a)
        {
            while (true)
            {
                if (Is("."))
                {
                    i++;
                    string name = Next().Text;
                    var l = a;
                    if (Is("("))
                    {
                        var args = Args();
                        a = s => Method(l(s), name, Values(args, s));
                    }
                    else a = s => Attr(l(s), name);
                }
                else if (Is("["))
                {
                    i++;
                    Func<Scope, object?>? lo = null, hi = null;
                    if (!Is(":")) lo = Ternary();
                    if (Is(":"))
                    {
                        i++;
                        if (!Is("]")) hi = Ternary();
                        Expect("]");
                        var l = a;
                        a = s => Slice(l(s), lo?.Invoke(s), hi?.Invoke(s));
                    }
                    else
                    {
                        Expect("]");
                        var l = a;
                        var key = lo!;
                        a = s => Index(l(s), key(s));
                    }
                }
                else if (Is("("))
                {
                    var args = Args();
                    var l = a;
                    a = s => l(s) is Func<List<object?>, object?> f ? f(args.Select(x => x(s)).ToList()) : throw new BitDeltaException("chat template: call of something that is not a function");
                }
                else return a;
            }
        }

        Func<Scope, object?> Primary()
        {
            var t = Next();
            switch (t.Type)
            {
                case 's':
                {
                    string v = t.Text;
                    while (toks[i].Type == 's') v += Next().Text;   // adjacent literals join, as in Python
                    return _ => v;
                }
                case 'i': { long v = long.Parse(t.Text, CultureInfo.InvariantCulture); return _ => v; }
                case 'f': { double v = double.Parse(t.Text, CultureInfo.InvariantCulture); return _ => v; }
                case 'n':
                    switch (t.Text)
                    {
                        case "true" or "True": return _ => true;
                        case "false" or "False": return _ => false;
                        case "none" or "None": return _ => null;
                    }
                    string name = t.Text;
                    return s => s.Get(name);
            }
            if (t.Text == "(")
            {
                var e = Ternary();
                Expect(")");
                return e;
            }
            if (t.Text == "[")
            {
                var items = new List<Func<Scope, object?>>();
                while (!Is("]"))
                {
                    items.Add(Ternary());
                    if (!Is("]")) Expect(",");
                }
                i++;
                return s => items.Select(f => f(s)).ToList();
            }
            if (t.Text == "{")
            {
                var kv = new List<(Func<Scope, object?>, Func<Scope, object?>)>();
                while (!Is("}"))
                {
                    var k = Ternary();
                    Expect(":");
                    kv.Add((k, Ternary()));
                    if (!Is("}")) Expect(",");
                }
                i++;
                return s => kv.ToDictionary(p => Str(p.Item1(s)), p => p.Item2(s));
            }
            throw Error($"unexpected '{t.Text}'");
        }
    }

    // ---- values: Python's semantics ----

    static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        System.Collections.ICollection c => c.Count > 0,
        _ => true,
    };

    static bool Equal(object? a, object? b) => (a, b) switch
    {
        (long x, double y) => x == y,
        (double x, long y) => x == y,
        (Undefined, Undefined) => true,
        (null, null) => true,
        (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => Equal(p.First, p.Second)),
        _ => Equals(a, b),
    };

    static bool Order(object? a, object? b, string op)
    {
        int c = (a, b) switch
        {
            (string x, string y) => string.CompareOrdinal(x, y),
            _ when IsNumber(a) && IsNumber(b) => Num(a).CompareTo(Num(b)),
            _ => throw new BitDeltaException($"chat template: cannot compare {TypeName(a)} and {TypeName(b)} with '{op}'"),
        };
        return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
    }

    static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new BitDeltaException("chat template: 'in <string>' needs a string"),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        List<object?> l => l.Any(x => Equal(x, item)),
        _ => throw new BitDeltaException($"chat template: 'in' over {TypeName(container)}"),
    };

    static bool IsNumber(object? v) => v is long or double or bool;
    static double Num(object? v) => v switch { long l => l, double d => d, bool b => b ? 1 : 0, _ => throw new BitDeltaException($"chat template: {TypeName(v)} is not a number") };
    static long Int(object? v) => v switch { long l => l, bool b => b ? 1 : 0, double d => (long)d, string s when long.TryParse(s, out long x) => x, _ => throw new BitDeltaException($"chat template: {TypeName(v)} is not an integer") };

    static object? Arith(string op, object? a, object? b)
    {
        if (op == "+" && a is string sa && b is string sb) return sa + sb;
        if (op == "+" && a is List<object?> la && b is List<object?> lb) return la.Concat(lb).ToList();
        if (op == "*" && a is string rep && b is long n) return string.Concat(Enumerable.Repeat(rep, (int)Math.Max(0, n)));
        if (!IsNumber(a) || !IsNumber(b)) throw new BitDeltaException($"chat template: '{op}' of {TypeName(a)} and {TypeName(b)}");
        if (a is not double && b is not double && op != "/")
        {
            long x = Int(a), y = Int(b);
            return op switch
            {
                "+" => x + y, "-" => x - y, "*" => x * y,
                "//" => y == 0 ? throw new BitDeltaException("chat template: division by zero") : (long)Math.Floor((double)x / y),
                _ => y == 0 ? throw new BitDeltaException("chat template: modulo by zero") : ((x % y) + y) % y,
            };
        }
        double p = Num(a), q = Num(b);
        return op switch { "+" => p + q, "-" => p - q, "*" => p * q, "/" => p / q, "//" => Math.Floor(p / q), _ => p - q * Math.Floor(p / q) };
    }

    static object? Attr(object? v, string name) => v switch
    {
        Undefined => throw new BitDeltaException($"chat template: '{name}' of an undefined value"),
        Dictionary<string, object?> d => d.TryGetValue(name, out var x) ? x : Undefined.Value,
        _ => Undefined.Value,
    };

    static object? Index(object? v, object? key) => v switch
    {
        Undefined => throw new BitDeltaException("chat template: subscript of an undefined value"),
        Dictionary<string, object?> d => key is string k && d.TryGetValue(k, out var x) ? x : Undefined.Value,
        List<object?> l => Int(key) is var i && (i < 0 ? i + l.Count : i) is var j && j >= 0 && j < l.Count ? l[(int)j] : Undefined.Value,
        string s => Int(key) is var i2 && (i2 < 0 ? i2 + s.Length : i2) is var j2 && j2 >= 0 && j2 < s.Length ? s[(int)j2].ToString() : Undefined.Value,
        _ => Undefined.Value,
    };

    static object? Slice(object? v, object? lo, object? hi)
    {
        int n = v switch { List<object?> l => l.Count, string s => s.Length, _ => throw new BitDeltaException($"chat template: slice of {TypeName(v)}") };
        int Clamp(object? x, int dflt) => x is null or Undefined ? dflt : (int)Math.Clamp(Int(x) < 0 ? Int(x) + n : Int(x), 0, n);
        int a = Clamp(lo, 0), b = Math.Max(a, Clamp(hi, n));
        return v is string str ? str[a..b] : ((List<object?>)v!).GetRange(a, b - a);
    }

    static IEnumerable<object?> Iterate(object? v) => v switch
    {
        null or Undefined => [],
        List<object?> l => l,
        string s => s.Select(c => (object?)c.ToString()),
        Dictionary<string, object?> d => d.Keys,
        _ => throw new BitDeltaException($"chat template: cannot loop over {TypeName(v)}"),
    };

    static object? Method(object? v, string name, List<object?> a)
    {
        if (v is string s)
            return name switch
            {
                "strip" => a.Count > 0 ? s.Trim(Str(a[0]).ToCharArray()) : s.Trim(),
                "lstrip" => a.Count > 0 ? s.TrimStart(Str(a[0]).ToCharArray()) : s.TrimStart(),
                "rstrip" => a.Count > 0 ? s.TrimEnd(Str(a[0]).ToCharArray()) : s.TrimEnd(),
                "upper" => s.ToUpperInvariant(),
                "lower" => s.ToLowerInvariant(),
                "title" => CultureInfo.InvariantCulture.TextInfo.ToTitleCase(s.ToLowerInvariant()),
                "capitalize" => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(),
                "startswith" => s.StartsWith(Str(a[0]), StringComparison.Ordinal),
                "endswith" => s.EndsWith(Str(a[0]), StringComparison.Ordinal),
                "replace" => s.Replace(Str(a[0]), Str(a[1]), StringComparison.Ordinal),
                "split" => (a.Count > 0 && a[0] is string sep ? s.Split(sep) : s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)).Select(x => (object?)x).ToList(),
                "find" => (long)s.IndexOf(Str(a[0]), StringComparison.Ordinal),
                "format" => throw new BitDeltaException("chat template: str.format is not supported"),
                _ => throw new BitDeltaException($"chat template: string method '{name}' is not supported"),
            };
        if (v is Dictionary<string, object?> d)
            return name switch
            {
                "items" => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList(),
                "keys" => d.Keys.Select(k => (object?)k).ToList(),
                "values" => d.Values.ToList(),
                "get" => d.TryGetValue(Str(a[0]), out var x) ? x : a.Count > 1 ? a[1] : null,
                _ => throw new BitDeltaException($"chat template: mapping method '{name}' is not supported"),
            };
        throw new BitDeltaException($"chat template: method '{name}' of {TypeName(v)}");
    }

    static object? Filter(string name, object? v, List<object?> a) => name switch
    {
        "trim" => Str(v).Trim(),
        "upper" => Str(v).ToUpperInvariant(),
        "lower" => Str(v).ToLowerInvariant(),
        "capitalize" => Method(Str(v), "capitalize", a),
        "title" => Method(Str(v), "title", a),
        "length" or "count" => (long)(v switch { string s => s.Length, System.Collections.ICollection c => c.Count, _ => throw new BitDeltaException($"chat template: length of {TypeName(v)}") }),
        "string" => Str(v),
        "int" => v is string s2 && !long.TryParse(s2, out _) ? 0L : Int(v),
        "float" => Num(v),
        "list" => Iterate(v).ToList(),
        "first" => Iterate(v).FirstOrDefault(Undefined.Value),
        "last" => Iterate(v).LastOrDefault(Undefined.Value),
        "join" => string.Join(a.Count > 0 ? Str(a[0]) : "", Iterate(v).Select(Str)),
        "default" or "d" => v is Undefined || (a.Count > 1 && Truthy(a[1]) && !Truthy(v)) ? (a.Count > 0 ? a[0] : "") : v,
        "replace" => Str(v).Replace(Str(a[0]), Str(a[1]), StringComparison.Ordinal),
        "items" => Method(v, "items", a),
        "tojson" => ToJson(v, a.Count > 0 && a[0] is long indent ? (int)indent : null),
        _ => throw new BitDeltaException($"chat template: filter '{name}' is not supported"),
    };

    static bool Test(string name, object? v, List<object?> a) => name switch
    {
        "defined" => v is not Undefined,
        "undefined" => v is Undefined,
        "none" => v is null,
        "string" => v is string,
        "number" => v is long or double,
        "integer" => v is long,
        "float" => v is double,
        "boolean" => v is bool,
        "mapping" => v is Dictionary<string, object?> or Namespace,
        "sequence" or "iterable" => v is string or List<object?> or Dictionary<string, object?>,
        "true" => v is true,
        "false" => v is false,
        "equalto" or "eq" or "sameas" => Equal(v, a[0]),
        "odd" => Int(v) % 2 != 0,
        "even" => Int(v) % 2 == 0,
        _ => throw new BitDeltaException($"chat template: test '{name}' is not supported"),
    };

    /// <summary>What Jinja prints: Python's str() of the value.</summary>
    static string Str(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => PyFloat(d),
        _ => Repr(v),
    };

    static string Repr(object? v) => v switch
    {
        string s => "'" + s.Replace("\\", "\\\\").Replace("'", "\\'").Replace("\n", "\\n") + "'",
        List<object?> l => "[" + string.Join(", ", l.Select(Repr)) + "]",
        Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}",
        null or Undefined or bool or long or double => Str(v),
        _ => v.ToString() ?? "",
    };

    static string PyFloat(double d) =>
        double.IsInteger(d) && Math.Abs(d) < 1e16 ? d.ToString("F1", CultureInfo.InvariantCulture) : d.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>transformers' tojson: <c>json.dumps(x, ensure_ascii=False)</c>, keys in their order, Python's separators
    /// (", " and ": "; with an indent, "," at line ends).</summary>
    static string ToJson(object? v, int? indent)
    {
        var sb = new StringBuilder();
        Write(v, 0);
        return sb.ToString();

        void Break(int depth)
        {
            if (indent is { } n) sb.Append('\n').Append(' ', n * depth);
        }

        void Write(object? x, int depth)
        {
            switch (x)
            {
                case null or Undefined: sb.Append("null"); break;
                case string str:
                    sb.Append('"');
                    foreach (char c in str)
                        sb.Append(c switch
                        {
                            '"' => "\\\"", '\\' => "\\\\", '\n' => "\\n", '\r' => "\\r", '\t' => "\\t", '\b' => "\\b", '\f' => "\\f",
                            < ' ' => $"\\u{(int)c:x4}",
                            _ => c.ToString(),
                        });
                    sb.Append('"');
                    break;
                case bool b: sb.Append(b ? "true" : "false"); break;
                case long or double: sb.Append(Str(x)); break;
                case List<object?> list:
                    sb.Append('[');
                    for (int k = 0; k < list.Count; k++)
                    {
                        if (k > 0) sb.Append(indent == null ? ", " : ",");
                        Break(depth + 1);
                        Write(list[k], depth + 1);
                    }
                    if (list.Count > 0) Break(depth);
                    sb.Append(']');
                    break;
                case IDictionary<string, object?> d:
                    sb.Append('{');
                    int m = 0;
                    foreach (var (k, val) in d)
                    {
                        if (m++ > 0) sb.Append(indent == null ? ", " : ",");
                        Break(depth + 1);
                        Write(k, depth + 1);
                        sb.Append(": ");
                        Write(val, depth + 1);
                    }
                    if (d.Count > 0) Break(depth);
                    sb.Append('}');
                    break;
                default: Write(x.ToString(), depth); break;
            }
        }
    }

    static string TypeName(object? v) => v switch
    {
        null => "none", Undefined => "an undefined value", string => "a string", bool => "a boolean", long => "an integer", double => "a float",
        List<object?> => "a list", _ => "a mapping",
    };

    /// <summary>Python strftime codes that templates use (Llama-3.1: "%d %b %Y") as .NET's.</summary>
    static string PyDateFormat(string f) => f.Replace("%d", "dd").Replace("%b", "MMM").Replace("%Y", "yyyy").Replace("%m", "MM").Replace("%B", "MMMM");
}
