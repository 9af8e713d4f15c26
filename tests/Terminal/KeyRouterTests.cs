using System.Text;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Appliance.Terminal;
using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Tests.Terminal;

/// <summary>Keys reach only the focused VM; Ctrl-A commands change focus, layout and view, or stop VMs.</summary>
public class KeyRouterTests
{
    private sealed class Harness
    {
        public readonly FakePane[] Panes =
        [
            new("secret-vm", ClassificationLevel.Secret, LabelColour.Red),
            new("public-vm", ClassificationLevel.Unclassified, LabelColour.Green),
            new("kiosk", ClassificationLevel.Unclassified, LabelColour.Blue, ConsoleKind.Vga) { Vga = FakePane.Screen("kiosk") },
        ];

        public readonly List<string> Stopped = [];
        public int StopAllCalls;
        public int ReportCalls;
        public readonly ConsoleSession Session;

        public Harness() => Session = new ConsoleSession(Panes, new ConsoleControls(
            pane => Stopped.Add(pane.VmName),
            () => StopAllCalls++,
            () => $"report {++ReportCalls}"));

        public void Type(params IEnumerable<ConsoleKeyInfo>[] keys)
        {
            foreach (var group in keys)
            {
                foreach (var key in group)
                {
                    Session.Key(key);
                }
            }
        }

        public void Type(params ConsoleKeyInfo[] keys) => Type((IEnumerable<ConsoleKeyInfo>)keys);

        public string InputOf(int pane) => Encoding.UTF8.GetString(Panes[pane].Input);
    }

    [Fact]
    public void TypedTextGoesOnlyToTheFocusedPane()
    {
        var h = new Harness();
        Assert.Equal(0, h.Session.Router.Focus);
        h.Type(Keys.Text("abc"), [Keys.Enter]);
        h.Type(Keys.EscapePrefix, Keys.Tab);
        h.Type(Keys.Text("xyz"), [Keys.Enter]);
        h.Type(Keys.EscapePrefix, Keys.Char('3'));
        h.Type(Keys.Text("k!"));
        Assert.Equal("abc\r", h.InputOf(0));
        Assert.Equal("xyz\r", h.InputOf(1));
        Assert.Equal("k!", h.InputOf(2));
    }

    [Fact]
    public void CtrlAThenCtrlASendsOneLiteralCtrlA()
    {
        var h = new Harness();
        h.Type(Keys.EscapePrefix, Keys.EscapePrefix, Keys.Char('a'));
        Assert.Equal([0x01, (byte)'a'], h.Panes[0].Input);
        Assert.False(h.Session.Router.EscapePending);
    }

    [Fact]
    public void CtrlAThenCSendsCtrlCWhileCtrlCAloneStopsEverything()
    {
        var h = new Harness();
        h.Type(Keys.EscapePrefix, Keys.Char('c'));
        Assert.Equal([0x03], h.Panes[0].Input);
        Assert.Equal(0, h.StopAllCalls);
        h.Type(Keys.Ctrl('c'));
        Assert.Equal(1, h.StopAllCalls);
        Assert.True(h.Session.Stopping);
        Assert.Equal([0x03], h.Panes[0].Input); // the Ctrl-C itself went to no guest
        h.Type(Keys.EscapePrefix, Keys.Char('x'));
        Assert.Equal(1, h.StopAllCalls); // StopAll is asked for once
    }

    [Theory]
    [InlineData('x')]
    [InlineData('q')]
    [InlineData('X')]
    public void CtrlAThenXOrQStopsAll(char key)
    {
        var h = new Harness();
        h.Type(Keys.EscapePrefix, Keys.Char(key));
        Assert.Equal(1, h.StopAllCalls);
        Assert.All(h.Panes, p => Assert.Empty(p.Input));
    }

    [Fact]
    public void CtrlAThenKStopsOnlyTheFocusedVmAndItGetsNoMoreInput()
    {
        var h = new Harness();
        h.Type(Keys.EscapePrefix, Keys.Char('n'));
        h.Type(Keys.EscapePrefix, Keys.Char('k'));
        Assert.Equal(["public-vm"], h.Stopped);
        h.Panes[1].Status = new PaneStatus(PaneState.Stopped, "stopped by the operator", 10, 2);
        h.Type(Keys.Text("late"));
        Assert.Empty(h.Panes[1].Input);
        Assert.Empty(h.Panes[0].Input);
    }

    [Fact]
    public void DigitsFocusThatVmAndUnknownOnesLeaveTheFocus()
    {
        var h = new Harness();
        h.Type(Keys.EscapePrefix, Keys.Char('2'));
        Assert.Equal(1, h.Session.Router.Focus);
        h.Type(Keys.EscapePrefix, Keys.Char('9'));
        Assert.Equal(1, h.Session.Router.Focus);
        Assert.Contains("no VM 9", h.Session.Router.Notice, StringComparison.Ordinal);
        h.Type(Keys.EscapePrefix, Keys.Char('1'));
        Assert.Equal(0, h.Session.Router.Focus);
        Assert.Null(h.Session.Router.Notice);
    }

    [Fact]
    public void NextWrapsAround()
    {
        var h = new Harness();
        var order = new List<int>();
        for (int i = 0; i < 4; i++)
        {
            h.Type(Keys.EscapePrefix, i % 2 == 0 ? Keys.Tab : Keys.Char('n'));
            order.Add(h.Session.Router.Focus);
        }
        Assert.Equal([1, 2, 0, 1], order);
    }

    [Fact]
    public void LayoutAndViewToggle()
    {
        var h = new Harness();
        Assert.Equal(ConsoleLayout.SideBySide, h.Session.Router.Layout);
        h.Type(Keys.EscapePrefix, Keys.Char('l'));
        Assert.Equal(ConsoleLayout.Single, h.Session.Router.Layout);
        h.Type(Keys.EscapePrefix, Keys.Char('l'));
        Assert.Equal(ConsoleLayout.SideBySide, h.Session.Router.Layout);

        // The kiosk (a VGA console) starts on its VGA screen and flips to its serial log and back.
        Assert.False(h.Session.Router.ShowsSerial(2));
        h.Type(Keys.EscapePrefix, Keys.Char('3'), Keys.EscapePrefix, Keys.Char('v'));
        Assert.True(h.Session.Router.ShowsSerial(2));
        h.Type(Keys.EscapePrefix, Keys.Char('v'));
        Assert.False(h.Session.Router.ShowsSerial(2));

        // A serial-only VM has nothing to flip to.
        h.Type(Keys.EscapePrefix, Keys.Char('1'), Keys.EscapePrefix, Keys.Char('v'));
        Assert.True(h.Session.Router.ShowsSerial(0));
        Assert.Contains("no VGA", h.Session.Router.Notice, StringComparison.Ordinal);
        Assert.All(h.Panes, p => Assert.Empty(p.Input));
    }

    [Fact]
    public void StatusToggles()
    {
        var h = new Harness();
        h.Type(Keys.EscapePrefix, Keys.Char('s'));
        Assert.Equal("report 1", h.Session.Report);
        h.Type(Keys.EscapePrefix, Keys.Char('s'));
        Assert.Null(h.Session.Report);
    }

    [Fact]
    public void UnknownCommandIsSwallowedWithANotice()
    {
        var h = new Harness();
        h.Type(Keys.EscapePrefix, Keys.Char('z'), Keys.Char('y'));
        Assert.Equal("y", h.InputOf(0));
        Assert.Equal("Ctrl-A z is not a command", h.Session.Router.Notice);
    }

    [Fact]
    public void KeysMapToWhatASerialTerminalSends()
    {
        var router = new KeyRouter([false]);
        byte[] buffer = new byte[KeyRouter.MaxBytesPerKey];
        byte[] Bytes(ConsoleKeyInfo key)
        {
            KeyOutcome outcome = router.Handle(key, buffer);
            Assert.Equal(outcome.ByteCount == 0 ? KeyAction.None : KeyAction.Input, outcome.Action);
            return buffer[..outcome.ByteCount];
        }

        Assert.Equal("\r"u8.ToArray(), Bytes(Keys.Enter));
        Assert.Equal([0x7F], Bytes(Keys.Backspace));
        Assert.Equal([0x7F], Bytes(Keys.Special(ConsoleKey.Backspace, '\b')));
        Assert.Equal("\e[A"u8.ToArray(), Bytes(Keys.Special(ConsoleKey.UpArrow)));
        Assert.Equal("\e[B"u8.ToArray(), Bytes(Keys.Special(ConsoleKey.DownArrow)));
        Assert.Equal("\e[C"u8.ToArray(), Bytes(Keys.Special(ConsoleKey.RightArrow)));
        Assert.Equal("\e[D"u8.ToArray(), Bytes(Keys.Special(ConsoleKey.LeftArrow)));
        Assert.Equal("\e[3~"u8.ToArray(), Bytes(Keys.Special(ConsoleKey.Delete)));
        Assert.Equal("\t"u8.ToArray(), Bytes(Keys.Tab));
        Assert.Equal("é"u8.ToArray(), Bytes(Keys.Char('é')));
        Assert.Equal([0x02], Bytes(Keys.Ctrl('b')));
        Assert.Equal([0x02], Bytes(new ConsoleKeyInfo('b', ConsoleKey.B, false, false, true))); // Ctrl reported as a modifier
        Assert.Equal("\eb"u8.ToArray(), Bytes(new ConsoleKeyInfo('b', ConsoleKey.B, false, true, false)));
        Assert.Empty(Bytes(Keys.Special(ConsoleKey.F5)));
        // A character outside the BMP arrives as two UTF-16 halves; the guest gets its UTF-8 once.
        Assert.Empty(Bytes(Keys.Char('\uD83D')));
        Assert.Equal("😀"u8.ToArray(), Bytes(Keys.Char('\uDE00')));
    }

    [Fact]
    public void HalfACharacterNeverCrossesToAnotherVm()
    {
        var h = new Harness();
        h.Type(Keys.Char('\uD83D'), Keys.EscapePrefix, Keys.Tab, Keys.Char('\uDE00'));
        Assert.Empty(h.Panes[0].Input);
        Assert.Empty(h.Panes[1].Input);
    }

    /// <summary>
    /// For any key sequence, every byte delivered lands in the pane that had the focus when its key
    /// was typed, and no command delivers bytes by itself except the two literal escapes.
    /// </summary>
    [Fact]
    public void AnyKeySequenceDeliversInputOnlyToTheFocusedPane()
    {
        ConsoleKeyInfo[] alphabet =
        [
            Keys.EscapePrefix, Keys.Tab, Keys.Enter, Keys.Backspace, Keys.Char('n'), Keys.Char('1'), Keys.Char('2'),
            Keys.Char('3'), Keys.Char('4'), Keys.Char('l'), Keys.Char('v'), Keys.Char('a'), Keys.Char('c'), Keys.Char('z'),
            Keys.Special(ConsoleKey.UpArrow), Keys.Char('s'),
        ];
        Prop.ForAll(Arb.From(Gen.ArrayOf(Gen.Elements(alphabet))), keys =>
        {
            var router = new KeyRouter([false, false, true]);
            byte[] buffer = new byte[KeyRouter.MaxBytesPerKey];
            foreach (var key in keys)
            {
                int focusBefore = router.Focus;
                bool pending = router.EscapePending;
                KeyOutcome outcome = router.Handle(key, buffer);
                if (outcome.Action == KeyAction.Input)
                {
                    if (outcome.Pane != focusBefore || router.Focus != focusBefore)
                    {
                        return false;
                    }
                    if (pending && key.KeyChar is not ('\u0001' or 'c'))
                    {
                        return false; // a command key produced input
                    }
                }
                if (outcome.Pane != router.Focus)
                {
                    return false;
                }
            }
            return router.Focus is >= 0 and < 3;
        }).QuickCheckThrowOnFailure();
    }
}
