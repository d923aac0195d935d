using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json.Nodes;
using BitDeltaNative.Tests.Cli;
using BitDeltaNative.Tests.Tensors;

namespace BitDeltaNative.Tests.Serving;

/// <summary>
/// The chat page in a real headless Chromium (Debian's <c>chromium</c> package; .ci/run installs it), driven over the
/// Chrome DevTools Protocol: pick tenant a beside the base, type a prompt, press Enter, wait for both streamed answers,
/// take a screenshot. The answers must be the greedy text each model gives alone.
/// </summary>
public sealed class ChatPageTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    static string? FindChromium() =>
        new[] { Environment.GetEnvironmentVariable("BITDELTA_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome" }
            .FirstOrDefault(p => !string.IsNullOrEmpty(p) && File.Exists(p));

    [Fact]
    public async Task TypingAPromptStreamsBothAnswersInChromium()
    {
        string? chromium = FindChromium();
        if (chromium == null) Assert.Skip("no Chromium found (BITDELTA_CHROMIUM, /usr/bin/chromium): install Debian's chromium package; .ci/run does");
        const string prompt = "Question: What is 7 + 8?\nAnswer:";
        const int max = 12;
        var wantA = fx.Alone("a", prompt, max);
        var wantBase = fx.Alone("base", prompt, max);
        await using var s = await TestServer.Start(fx);
        using var profile = new TempDir();
        var psi = new ProcessStartInfo(chromium)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            ArgumentList = { "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--remote-debugging-port=0",
                             $"--user-data-dir={profile.Path}", "--window-size=1280,800", "about:blank" },
        };
        using var browser = Process.Start(psi)!;
        try
        {
            string ws = await DevToolsAddress(browser);
            var port = new Uri(ws).Port;
            using var http = new HttpClient();
            var targets = JsonNode.Parse(await http.GetStringAsync($"http://127.0.0.1:{port}/json/list", Ct))!.AsArray();
            string pageWs = (string)targets.First(t => (string?)t!["type"] == "page")!["webSocketDebuggerUrl"]!;
            await using var cdp = await Cdp.Connect(pageWs);
            await cdp.Call("Page.enable");
            await cdp.Call("Page.navigate", new JsonObject { ["url"] = s.Server.Address.ToString() });
            await cdp.WaitFor("document.readyState === 'complete' && document.getElementById('model').options.length === 3");
            await cdp.Eval($"(() => {{ const m = document.getElementById('model'); m.value = 'a'; m.dispatchEvent(new Event('change')); document.getElementById('max').value = '{max}'; document.getElementById('temp').value = '0'; document.getElementById('prompt').focus(); }})()");
            // Typed as a person would: the text, a Shift+Enter line break, then Enter to send.
            var lines = prompt.Split('\n');
            for (int i = 0; i < lines.Length; i++)
            {
                if (i > 0) await cdp.Key("Enter", 13, shift: true, text: "\r");
                await cdp.Call("Input.insertText", new JsonObject { ["text"] = lines[i] });
            }
            Assert.Equal(prompt, (string?)await cdp.Eval("document.getElementById('prompt').value"));
            await cdp.Key("Enter", 13);
            await cdp.WaitFor("document.body.dataset.done === '1'");
            var outs = (await cdp.Eval("[...document.querySelectorAll('.out')].map(e => e.textContent)"))!.AsArray().Select(n => (string?)n).ToArray();
            Assert.Equal([wantA.Text, wantBase.Text], outs);
            Assert.Equal(["a", "base"], (await cdp.Eval("[document.getElementById('titleA').textContent, document.getElementById('titleB').textContent]"))!
                .AsArray().Select(n => (string?)n).ToArray());
            Assert.StartsWith("first text", (string?)await cdp.Eval("document.getElementById('statA').textContent"));

            var shot = await cdp.Call("Page.captureScreenshot", new JsonObject { ["format"] = "png" });
            byte[] png = Convert.FromBase64String((string)shot["data"]!);
            string dir = Path.Combine(AppContext.BaseDirectory, "artifacts");
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(Path.Combine(dir, "serve-chat-page.png"), png);
            var image = PngDecoder.Decode(png);
            Assert.Equal(1280, image.Width);
            Assert.True(image.Height >= 600);
        }
        finally
        {
            if (!browser.HasExited) browser.Kill(entireProcessTree: true);
            await browser.WaitForExitAsync(Ct);
        }
    }

    /// <summary>The browser's DevTools websocket address, from the line Chromium prints on stderr at start.</summary>
    static async Task<string> DevToolsAddress(Process browser)
    {
        var seen = new StringBuilder();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await browser.StandardError.ReadLineAsync(timeout.Token) is { } line)
        {
            seen.AppendLine(line);
            int at = line.IndexOf("ws://", StringComparison.Ordinal);
            if (line.StartsWith("DevTools listening on", StringComparison.Ordinal) && at >= 0) return line[at..].Trim();
        }
        throw new InvalidOperationException($"Chromium printed no DevTools address:\n{seen}");
    }

    /// <summary>A minimal Chrome DevTools Protocol client: one request at a time, events skipped.</summary>
    sealed class Cdp : IAsyncDisposable
    {
        readonly ClientWebSocket socket = new();
        int next;

        public static async Task<Cdp> Connect(string url)
        {
            var c = new Cdp();
            await c.socket.ConnectAsync(new Uri(url), Ct);
            return c;
        }

        public async Task<JsonNode> Call(string method, JsonObject? parameters = null)
        {
            int id = ++next;
            var msg = new JsonObject { ["id"] = id, ["method"] = method, ["params"] = parameters ?? new JsonObject() };
            await socket.SendAsync(Encoding.UTF8.GetBytes(msg.ToJsonString()), WebSocketMessageType.Text, true, Ct);
            var buf = new byte[1 << 16];
            while (true)
            {
                using var ms = new MemoryStream();
                WebSocketReceiveResult r;
                do
                {
                    r = await socket.ReceiveAsync(buf, Ct);
                    ms.Write(buf, 0, r.Count);
                } while (!r.EndOfMessage);
                var o = JsonNode.Parse(ms.ToArray())!;
                if ((int?)o["id"] != id) continue;
                if (o["error"] is { } e) throw new InvalidOperationException($"{method}: {e.ToJsonString()}");
                return o["result"]!;
            }
        }

        public async Task<JsonNode?> Eval(string expression)
        {
            var r = await Call("Runtime.evaluate", new JsonObject { ["expression"] = expression, ["returnByValue"] = true, ["awaitPromise"] = true });
            if (r["exceptionDetails"] is { } ex) throw new InvalidOperationException($"{expression}: {ex.ToJsonString()}");
            return r["result"]!["value"]?.DeepClone();
        }

        public async Task WaitFor(string condition, int seconds = 60)
        {
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed.TotalSeconds < seconds)
            {
                if (await Eval($"!!({condition})") is JsonValue v && v.GetValue<bool>()) return;
                await Task.Delay(50, Ct);
            }
            throw new TimeoutException($"waited {seconds} s for: {condition}");
        }

        public async Task Key(string key, int code, bool shift = false, string? text = null)
        {
            foreach (var type in new[] { "keyDown", "keyUp" })
            {
                var p = new JsonObject { ["type"] = type, ["key"] = key, ["code"] = key, ["windowsVirtualKeyCode"] = code, ["modifiers"] = shift ? 8 : 0 };
                if (type == "keyDown" && text != null) p["text"] = text;
                await Call("Input.dispatchKeyEvent", p);
            }
        }

        public async ValueTask DisposeAsync()
        {
            try { await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None); }
            catch (WebSocketException) { }
            socket.Dispose();
        }
    }
}
