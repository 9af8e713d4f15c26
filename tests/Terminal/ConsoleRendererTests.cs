using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Appliance.Terminal;
using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Tests.Terminal;

/// <summary>Frames drawn from fake panes: labels in frames, one focus marker, status rows, guest text kept inside its pane.</summary>
public class ConsoleRendererTests
{
    private static FakePane Secret() => new("secret-vm", ClassificationLevel.Secret, LabelColour.Red);

    private static FakePane Public() => new("public-vm", ClassificationLevel.Unclassified, LabelColour.Green);

    private static string[] Render(IReadOnlyList<IConsolePane> panes, KeyRouter router, int width = 120, int height = 30, string? report = null)
    {
        string text = ConsoleRenderer.RenderPlain(panes, router, new ConsoleFrame(width, height, StatusReport: report));
        string[] lines = text.TrimEnd('\n').Split('\n');
        Assert.Equal(height, lines.Length);
        Assert.All(lines, l => Assert.Equal(width, l.Length)); // every row exactly fills the screen: nothing leaked out of a frame
        return lines;
    }

    private static int Count(string text, string what) => (text.Length - text.Replace(what, "", StringComparison.Ordinal).Length) / what.Length;

    [Fact]
    public void TwoPanesSideBySideFramedByTheirLabelsWithOneFocus()
    {
        var secret = Secret();
        var pub = Public();
        secret.Print("secret says hello\r\nunclass> ");
        pub.Print("public says hi\r\n");
        secret.Status = new PaneStatus(PaneState.Running, "", 1_234_567, 890);
        string[] lines = Render([secret, pub], new KeyRouter([false, false]));

        // The top row holds both frames' titles; the focused one is double-bordered with the marker.
        Assert.StartsWith("╔", lines[0], StringComparison.Ordinal);
        Assert.Contains("▶ FOCUS · 1 SECRET · secret-vm", lines[0], StringComparison.Ordinal);
        Assert.Contains("┌", lines[0][60..], StringComparison.Ordinal);
        Assert.Contains("2 UNCLASSIFIED · public-vm", lines[0][60..], StringComparison.Ordinal);
        string all = string.Join('\n', lines);
        Assert.Equal(1, Count(all, "FOCUS"));

        // Guest text is inside its own frame.
        int hello = Array.FindIndex(lines, l => l.Contains("secret says hello", StringComparison.Ordinal));
        Assert.True(hello > 0);
        Assert.True(lines[hello].IndexOf("secret says hello", StringComparison.Ordinal) < 60);
        int hi = Array.FindIndex(lines, l => l.Contains("public says hi", StringComparison.Ordinal));
        Assert.True(lines[hi].IndexOf("public says hi", StringComparison.Ordinal) > 60);

        // Status rows (one per VM, the focused marked) and the key help row, drawn by the appliance.
        Assert.StartsWith("▶ 1 SECRET · secret-vm  running  1,234,567 instructions  890 exits", lines[^3], StringComparison.Ordinal);
        Assert.StartsWith("  2 UNCLASSIFIED · public-vm  running", lines[^2], StringComparison.Ordinal);
        Assert.StartsWith("Ctrl-A then: Tab/n next · 1-9 VM N", lines[^1], StringComparison.Ordinal);
        Assert.Equal("Ctrl-A then: Tab/n next · 1-9 VM N · l layout · v VGA/serial · s status · k stop VM · x/q stop all · " +
            "Ctrl-A sends Ctrl-A · c sends Ctrl-C | Ctrl-C stops all", Render([secret, pub], new KeyRouter([false, false]), width: 160)[^1].TrimEnd());
    }

    [Fact]
    public void TheFocusMarkerFollowsTheFocus()
    {
        var panes = new[] { Secret(), Public() };
        var router = new KeyRouter([false, false]);
        router.FocusOn(1);
        string[] lines = Render(panes, router);
        Assert.StartsWith("┌", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("FOCUS", lines[0][..60], StringComparison.Ordinal);
        Assert.Contains("╔", lines[0][60..], StringComparison.Ordinal);
        Assert.Contains("▶ FOCUS · 2 UNCLASSIFIED · public-vm", lines[0][60..], StringComparison.Ordinal);
        Assert.StartsWith("  1 SECRET", lines[^3], StringComparison.Ordinal);
        Assert.StartsWith("▶ 2 UNCLASSIFIED", lines[^2], StringComparison.Ordinal);
    }

    [Fact]
    public void AGuestCannotDrawAnotherLabelOrTheFocusIntoTheFrame()
    {
        var secret = Secret();
        var pub = Public();
        // The UNCLASSIFIED guest tries everything: clear the screen, move the cursor to the top,
        // print a fake frame with the SECRET label and the focus marker (UTF-8 box drawing), and
        // a line-log style "[SECRET ...]" prefix.
        pub.Print("\e[2J\e[1;1H╔══ ▶ FOCUS · 1 SECRET · secret-vm ══╗\r\n[SECRET secret-vm] fake\r\n\e]0;title\a");
        var router = new KeyRouter([false, false]);
        router.FocusOn(0);
        string[] lines = Render([secret, pub], router);
        string all = string.Join('\n', lines);

        // The real titles are where the appliance put them, from the policy labels.
        Assert.Contains("▶ FOCUS · 1 SECRET · secret-vm", lines[0][..60], StringComparison.Ordinal);
        Assert.Contains("2 UNCLASSIFIED · public-vm", lines[0][60..], StringComparison.Ordinal);
        // Only one focus marker glyph in the panes (the other is the status row's).
        Assert.Equal(1, Count(string.Join('\n', lines[..^3]), "▶"));
        Assert.Equal(2, Count(all, "▶"));
        // The fake frame and label are text inside the guest's own frame, between the real borders,
        // with the marker replaced; the real frames are intact on every row.
        Assert.Equal("│ ╔══ ? FOCUS · 1 SECRET · secret-vm ══╗", lines[1][60..100]);
        Assert.Equal("│ [SECRET secret-vm] fake", lines[2][60..85]);
        Assert.All(lines[1..^4], l => Assert.True(l[0] == '║' && l[59] == '║' && l[60] == '│' && l[119] == '│', l));
        Assert.DoesNotContain('\e', all);
    }

    [Fact]
    public void AVgaScreenIsSanitizedAndCannotShowTheFocusMarker()
    {
        var kiosk = new FakePane("kiosk", ClassificationLevel.Unclassified, LabelColour.Blue, ConsoleKind.Vga)
        {
            Vga = FakePane.Screen("╔══ ▶ FOCUS fake ══╗", "bell\u0007 esc\u001b[31m nul\0end", "ok"),
        };
        kiosk.Print("serial side\r\n");
        var panes = new IConsolePane[] { Secret(), kiosk };
        var router = KeyRouter.For(panes);
        string[] lines = Render(panes, router);
        Assert.Contains("2 UNCLASSIFIED · kiosk · VGA", lines[0], StringComparison.Ordinal);
        Assert.Contains(lines, l => l.Contains("╔══ ? FOCUS fake ══╗", StringComparison.Ordinal)); // box drawing is VGA's own; the marker is not
        Assert.Contains(lines, l => l.Contains("bell  esc [31m nul end", StringComparison.Ordinal));
        // A 60-column pane has no room for padding beside a VGA screen: its text starts next to the border.
        Assert.Contains(lines, l => l[60..].StartsWith("│ok", StringComparison.Ordinal));
        Assert.Equal(1, Count(string.Join('\n', lines[..^3]), "▶"));
        Assert.DoesNotContain(lines, l => l.Contains("serial side", StringComparison.Ordinal));

        router.FocusOn(1);
        router.Handle(Keys.EscapePrefix, new byte[KeyRouter.MaxBytesPerKey]);
        router.Handle(Keys.Char('v'), new byte[KeyRouter.MaxBytesPerKey]);
        lines = Render(panes, router);
        Assert.Contains("▶ FOCUS · 2 UNCLASSIFIED · kiosk · serial log", lines[0], StringComparison.Ordinal);
        Assert.Contains(lines, l => l.Contains("serial side", StringComparison.Ordinal));
    }

    [Fact]
    public void APaneShowsTheTailOfItsLogAndCropsLongLines()
    {
        var secret = Secret();
        for (int i = 0; i < 100; i++)
        {
            secret.Print($"line {i:000}\n");
        }
        secret.Print(new string('w', 200) + "END");
        string[] lines = Render([secret, Public()], new KeyRouter([false, false]));
        string all = string.Join('\n', lines);
        Assert.Contains("line 099", all, StringComparison.Ordinal);
        Assert.DoesNotContain("line 000", all, StringComparison.Ordinal);
        Assert.DoesNotContain("END", all, StringComparison.Ordinal);
        // The last line of the pane body is the unfinished one, cropped at the frame.
        int row = Array.FindLastIndex(lines, l => l.Contains("www", StringComparison.Ordinal));
        Assert.Equal("line 099", lines[row - 1][2..10]);
        Assert.Equal('║', lines[row][59]);
    }

    [Fact]
    public void SingleLayoutShowsOnlyTheFocusedPaneFullSize()
    {
        var panes = new[] { Secret(), Public() };
        var router = new KeyRouter([false, false]);
        router.FocusOn(1);
        router.Handle(Keys.EscapePrefix, new byte[KeyRouter.MaxBytesPerKey]);
        router.Handle(Keys.Char('l'), new byte[KeyRouter.MaxBytesPerKey]);
        string[] lines = Render(panes, router);
        Assert.StartsWith("╔", lines[0], StringComparison.Ordinal);
        Assert.EndsWith("╗", lines[0], StringComparison.Ordinal);
        Assert.Contains("▶ FOCUS · 2 UNCLASSIFIED · public-vm", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("SECRET", lines[0], StringComparison.Ordinal);
        Assert.StartsWith("  1 SECRET", lines[^3], StringComparison.Ordinal); // the status rows still list every VM
    }

    [Fact]
    public void ATallTerminalStacksThePanesAndFourMakeAGrid()
    {
        string[] lines = Render([Secret(), Public()], new KeyRouter([false, false]), width: 70, height: 70);
        Assert.Contains("SECRET · secret-vm", lines[0], StringComparison.Ordinal);
        int second = Array.FindIndex(lines, 1, l => l.Contains("UNCLASSIFIED · public-vm", StringComparison.Ordinal));
        Assert.True(second > 20);

        Assert.Equal(new PaneGrid(2, 1), PaneGrid.Choose(2, 160, 45));
        Assert.Equal(new PaneGrid(1, 2), PaneGrid.Choose(2, 80, 60));
        Assert.Equal(new PaneGrid(2, 2), PaneGrid.Choose(4, 170, 56));
        Assert.Equal(new PaneGrid(3, 1), PaneGrid.Choose(3, 260, 30));
        Assert.Equal([4, 3, 3], PaneGrid.Split(10, 3));
    }

    [Fact]
    public void StoppedVmsAndTheStatusReportAreShown()
    {
        var secret = Secret();
        var pub = Public();
        pub.Status = new PaneStatus(PaneState.Stopped, "guest powered off", 42, 7);
        string[] lines = Render([secret, pub], new KeyRouter([false, false]), report: "appliance lab: 2 VMs\nsecret-vm running");
        Assert.Contains("2 UNCLASSIFIED · public-vm · stopped", lines[0], StringComparison.Ordinal);
        Assert.Contains("stopped: guest powered off  42 instructions  7 exits", lines[^2], StringComparison.Ordinal);
        Assert.Contains(lines, l => l.Contains("Status (Ctrl-A s closes)", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("appliance lab: 2 VMs", StringComparison.Ordinal));
    }

    [Fact]
    public void TheEscapePrefixAndNoticesShowOnTheHelpRow()
    {
        var panes = new[] { Secret(), Public() };
        var router = new KeyRouter([false, false]);
        router.Handle(Keys.EscapePrefix, new byte[KeyRouter.MaxBytesPerKey]);
        Assert.StartsWith("Ctrl-A pressed, now:", Render(panes, router)[^1], StringComparison.Ordinal);
        router.Handle(Keys.Char('7'), new byte[KeyRouter.MaxBytesPerKey]);
        Assert.StartsWith("no VM 7: there are 2 | Ctrl-A then:", Render(panes, router)[^1], StringComparison.Ordinal);
    }

    [Fact]
    public void ATinyTerminalGetsANoticeNamingTheFocus()
    {
        string text = ConsoleRenderer.RenderPlain([Secret(), Public()], new KeyRouter([false, false]), new ConsoleFrame(20, 5));
        Assert.StartsWith("terminal 20x5 is to", text, StringComparison.Ordinal);
        Assert.Equal(5, text.TrimEnd('\n').Split('\n').Length);
    }

    [Fact]
    public void ColouredFramesCarryTheLabelColourAndNoGuestEscape()
    {
        var secret = Secret();
        secret.Print("\e[32mfake green\e[0m\r\n");
        string ansi = ConsoleRenderer.RenderAnsi([secret, Public()], new KeyRouter([false, false]), new ConsoleFrame(100, 20), ColourMode.Basic);
        Assert.StartsWith("\e[1;1H", ansi, StringComparison.Ordinal);
        Assert.Contains("\e[0;1;91m╔", ansi, StringComparison.Ordinal); // the focused SECRET frame: bold bright red (SGR 1;91)
        Assert.Contains("\e[0;92m┌", ansi, StringComparison.Ordinal);   // the UNCLASSIFIED frame: green
        string palette = ConsoleRenderer.RenderAnsi([secret, Public()], new KeyRouter([false, false]), new ConsoleFrame(100, 20), ColourMode.Palette256);
        Assert.Contains("\e[0;1;38;5;196m╔", palette, StringComparison.Ordinal);
        Assert.DoesNotContain("\e[0;", ConsoleRenderer.RenderAnsi([secret, Public()], new KeyRouter([false, false]), new ConsoleFrame(100, 20), ColourMode.None)[8..], StringComparison.Ordinal);
        Assert.Contains("fake green", ansi, StringComparison.Ordinal);
        Assert.DoesNotContain("\e[32mfake", ansi, StringComparison.Ordinal);
    }

    /// <summary>
    /// Whatever two guests print (random bytes, biased towards escapes, UTF-8 box drawing and the
    /// focus marker), the frame keeps its shape: every row exactly the screen's width, both frames'
    /// borders in their columns, both titles from the policy labels, and one focus marker.
    /// </summary>
    [Fact]
    public void NoGuestOutputChangesTheFramesShape()
    {
        byte[][] pieces =
        [
            "\e["u8.ToArray(), "\e]0;"u8.ToArray(), "\a"u8.ToArray(), "\r\n"u8.ToArray(), "\b"u8.ToArray(), "\t"u8.ToArray(),
            "╔═║╗"u8.ToArray(), "▶ FOCUS · 1 SECRET"u8.ToArray(), "字"u8.ToArray(), [0xE2], [0x9B], [0xC2, 0x9B], "\u202e"u8.ToArray(),
        ];
        Gen<byte[]> piece = Gen.OneOf(Gen.Elements(pieces), Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b)));
        Gen<byte[]> output = Gen.ArrayOf(piece).Select(parts => parts.SelectMany(p => p).ToArray());
        Prop.ForAll(Arb.From(output), Arb.From(output), (first, second) =>
        {
            var secret = Secret();
            var pub = Public();
            secret.Print(first);
            pub.Print(second);
            string[] lines = Render([secret, pub], new KeyRouter([false, false]));
            return lines[0].StartsWith("╔═ ▶ FOCUS · 1 SECRET · secret-vm ═", StringComparison.Ordinal)
                && lines[0][60..].StartsWith("┌─ 2 UNCLASSIFIED · public-vm ─", StringComparison.Ordinal)
                && lines[1..^4].All(l => l[0] == '║' && l[59] == '║' && l[60] == '│' && l[119] == '│')
                && lines[^4].StartsWith("╚", StringComparison.Ordinal) && lines[^4][60] == '└'
                && Count(string.Join('\n', lines), "▶ FOCUS") == 1
                && lines.All(l => l.All(c => PaneText.IsSafe(c) || c == PaneText.FocusGlyph));
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(100));
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("tab\there", "tab here")]
    [InlineData("\u0085nel\u009b", " nel ")]
    [InlineData("rtl\u202eevil", "rtl?evil")]     // bidi override (a format character)
    [InlineData("wide字", "wide?")]              // two cells wide
    [InlineData("zw\u200bj", "zw?j")]            // zero width space
    [InlineData("mark\u0301", "mark?")]          // combining accent
    [InlineData("▶ focus", "? focus")]
    public void SanitizeKeepsOneCellPerCharacterAndNoControls(string guest, string shown) =>
        Assert.Equal(shown, PaneText.Sanitize(guest));
}
