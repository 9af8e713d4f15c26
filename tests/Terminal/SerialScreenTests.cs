using System.Text;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Appliance.Terminal;
using Xunit;

namespace SecureVmm.Tests.Terminal;

/// <summary>Guest serial bytes become plain lines: no escape or control byte survives, whatever the guest sends.</summary>
public class SerialScreenTests
{
    private static SerialScreen Feed(string text, int scrollback = 100) => Feed(Encoding.Latin1.GetBytes(text), scrollback);

    private static SerialScreen Feed(byte[] bytes, int scrollback = 100)
    {
        var screen = new SerialScreen(scrollback);
        foreach (byte b in bytes)
        {
            screen.Transmit(b);
        }
        return screen;
    }

    private static List<string> All(SerialScreen s) => [.. s.Tail(10_000)];

    [Fact]
    public void LinesEndAtLineFeedAndThePromptWaitsUnfinished()
    {
        var s = Feed("boot ok\r\nlogin: ");
        Assert.Equal(["boot ok", "login: "], All(s));
        Assert.Equal("login: ", s.CurrentLine);
        Assert.Equal(1, s.LineCount);
        Assert.Equal(16, s.ByteCount);
    }

    [Fact]
    public void CarriageReturnOverwritesAndBackspaceMovesBack()
    {
        Assert.Equal(["done 100%"], All(Feed("done  10%\rdone 100%")));
        Assert.Equal(["abd"], All(Feed("abc\bd")));
        Assert.Equal(["x"], All(Feed("\b\bx"))); // backspace at column 0 stays there
        Assert.Equal(["a       b"], All(Feed("a\tb")));
    }

    [Theory]
    [InlineData("\e[31mred\e[0m", "red")]                        // SGR colour (CSI)
    [InlineData("\e[2J\e[H\e[10;20Hhome", "home")]               // clear screen, cursor moves
    [InlineData("\e]0;owned title\ax", "x")]                     // OSC window title, BEL-terminated
    [InlineData("\e]2;title\e\\y", "y")]                          // OSC, ST-terminated
    [InlineData("\ePq#0;2;0;0;0\e\\z", "z")]                      // DCS (sixel)
    [InlineData("\e_apc\e\\\e^pm\e\\\eXsos\e\\w", "w")]            // APC, PM, SOS
    [InlineData("\e(0lqk\e(Bq", "lqkq")]                         // charset designation dropped whole; text stays text
    [InlineData("\e7\e8\ecv", "v")]                              // two-byte sequences
    [InlineData("\u009b31m\u009dx\u0007!", "31mx!")]             // raw C1 bytes are not controls on a UTF-8 line: dropped, text stays
    [InlineData("a\u0000\u0007\u000e\u000f\u007f\u0085b", "ab")] // NUL, BEL, SO, SI, DEL, NEL
    [InlineData("\e[31\e[32mg", "g")]                            // ESC inside CSI restarts
    [InlineData("\e[12\u0018k", "k")]                            // CAN cancels a sequence
    [InlineData("caf\u00e9 \u00ad", "caf\u00e9 -")]              // not UTF-8: Latin-1, soft hyphen made visible
    public void EscapeSequencesAndControlsNeverSurvive(string guest, string shown)
    {
        var s = Feed(guest);
        Assert.Equal(shown, s.CurrentLine);
    }

    [Theory]
    [InlineData("caf\u00e9 25\u00b0C", "caf\u00e9 25\u00b0C")]
    [InlineData("\u0410\u0411 \u2500\u2502", "\u0410\u0411 \u2500\u2502")] // Cyrillic (D0 90: a continuation byte that is 8-bit DCS) and box drawing
    [InlineData("\u25b6 FOCUS", "? FOCUS")]                   // the console's focus marker is the appliance's alone
    [InlineData("wide\u5b57 \U0001F600 rtl\u202e", "wide? ? rtl?")] // two cells wide, outside the BMP, bidi override
    [InlineData("c1\u009b31m", "c131m")]                     // C1 CSI encoded in UTF-8 (C2 9B): dropped, not obeyed
    public void Utf8TextIsDecodedAndUnsafeCharactersReplaced(string guest, string shown) =>
        Assert.Equal(shown, Feed(Encoding.UTF8.GetBytes(guest)).CurrentLine);

    [Fact]
    public void BytesThatAreNotUtf8AreLatin1()
    {
        // Overlong "/" (C0 AF), a lone lead byte before ASCII, a truncated three-byte character, a surrogate (ED A0 80).
        // Raw bytes 0x80-0x9F are dropped (they are C1 controls in Latin-1).
        Assert.Equal("\u00c0\u00af \u00e9x \u00e2 \u00ed\u00a0", Feed([0xC0, 0xAF, 0x20, 0xE9, (byte)'x', 0x20, 0xE2, 0x94, 0x20, 0xED, 0xA0, 0x80]).CurrentLine);
        Assert.Equal("\u00e2x", Feed([0xE2, 0x1B, (byte)'[', (byte)'m', (byte)'x']).CurrentLine); // an escape interrupts a character
    }

    [Fact]
    public void ControlBytesInsideASequenceStillAct()
    {
        // xterm executes C0 controls met inside a control sequence; the line still ends.
        Assert.Equal(["ab", "c"], All(Feed("ab\e[3\n1mc")));
    }

    [Fact]
    public void AnUnterminatedStringControlIsAbandonedAfterItsBound()
    {
        string guest = "\e]" + new string('t', SerialScreen.MaxSequenceBytes + 1) + "visible";
        Assert.Equal("visible", Feed(guest).CurrentLine);
    }

    [Fact]
    public void LongLinesWrapAtMaxColumns()
    {
        string text = new string('x', SerialScreen.MaxColumns * 2 + 10);
        var lines = new List<string>();
        var s = new SerialScreen();
        s.LineCompleted += lines.Add;
        foreach (char c in text)
        {
            s.Transmit((byte)c);
        }
        Assert.Equal(2, lines.Count);
        Assert.All(lines, l => Assert.Equal(SerialScreen.MaxColumns, l.Length));
        Assert.Equal(10, s.CurrentLine.Length);
    }

    [Fact]
    public void ScrollbackIsBounded()
    {
        var sb = new StringBuilder();
        for (int i = 0; i < 500; i++)
        {
            sb.Append("line ").Append(i).Append('\n');
        }
        var s = Feed(sb.ToString(), scrollback: 50);
        Assert.Equal(50, s.LineCount);
        var tail = s.Tail(1000);
        Assert.Equal(51, tail.Count);
        Assert.Equal("line 450", tail[0]);
        Assert.Equal("line 499", tail[^2]);
        Assert.Equal("", tail[^1]);
        Assert.Equal(["line 499", ""], s.Tail(2));
        Assert.Empty(s.Tail(0));
    }

    [Fact]
    public void EveryListenerGetsEveryCompletedLine()
    {
        var s = new SerialScreen();
        var first = new List<string>();
        var second = new List<string>();
        s.LineCompleted += first.Add;
        s.LineCompleted += second.Add;
        foreach (byte b in "one\ntwo\nthr"u8)
        {
            s.Transmit(b);
        }
        Assert.Equal(["one", "two"], first);
        Assert.Equal(first, second);
    }

    /// <summary>
    /// Whatever bytes a guest sends, the screen holds only characters that are one safe terminal
    /// cell: no escape, no control or format character, no focus marker — nothing that could reach
    /// the host terminal as a command or reach outside the pane.
    /// </summary>
    [Fact]
    public void AnyGuestBytesGivePlainPrintableText()
    {
        // Bias towards the bytes that matter: ESC, '[', ']', C1 controls, CR/LF/BS.
        Gen<byte> interesting = Gen.Elements<byte>(0x1B, 0xE2, 0x96, 0xB6, 0xC2, 0xD0, (byte)'[', (byte)']', (byte)'\\', 0x07, 0x9B, 0x9D, 0x90, 0x9C, 0x0D, 0x0A, 0x08, 0x09, 0x18, (byte)'m');
        Gen<byte> anyByte = Gen.Choose(0, 255).Select(i => (byte)i);
        Arbitrary<byte[]> bytes = Arb.From(Gen.ArrayOf(Gen.OneOf(anyByte, interesting)));
        Prop.ForAll(bytes, input =>
        {
            var s = Feed(input, scrollback: 1000);
            return s.Tail(2000).All(line => line.Length <= SerialScreen.MaxColumns && line.All(PaneText.IsSafe));
        }).QuickCheckThrowOnFailure();
    }
}
