using SecureVmm.Appliance.Terminal;
using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Tests.Terminal;

/// <summary>The non-interactive console: whole lines, each prefixed by the appliance's label.</summary>
public class LineLogTests
{
    [Fact]
    public void EachCompletedLineIsPrefixedByItsVmsLabel()
    {
        var kiosk = new FakePane("kiosk", ClassificationLevel.Secret, LabelColour.Red);
        var pub = new FakePane("public-vm", ClassificationLevel.Unclassified, LabelColour.Green);
        var output = new StringWriter();
        using (var log = LineLog.Attach([kiosk, pub], output))
        {
            kiosk.Print("kiosk: uptime 3 s\r\n");
            pub.Print("\e[31mhello\e[0m\n[SECRET kiosk] forged\n");
            log.Note(kiosk, "stopped: guest powered off");
            pub.Print("unclass> ");
        }
        pub.Print("after the log closed\n");
        Assert.Equal(
            "[SECRET kiosk] kiosk: uptime 3 s\n" +
            "[UNCLASSIFIED public-vm] hello\n" +
            "[UNCLASSIFIED public-vm] [SECRET kiosk] forged\n" +
            "[SECRET kiosk] -- stopped: guest powered off\n" +
            "[UNCLASSIFIED public-vm] unclass> \n",
            output.ToString().Replace("\r\n", "\n", StringComparison.Ordinal));
    }

    [Fact]
    public void LinesFromManyVmsAreNeverInterleaved()
    {
        var panes = Enumerable.Range(0, 4)
            .Select(i => new FakePane($"vm{i}", ClassificationLevel.Unclassified, LabelColour.Green)).ToArray();
        // A writer that writes a character at a time, so any missing lock would show as torn lines.
        var output = new CharByCharWriter();
        using (LineLog.Attach(panes, output))
        {
            Parallel.ForEach(panes, pane =>
            {
                for (int i = 0; i < 200; i++)
                {
                    pane.Print($"{pane.VmName} line {i} {new string('#', 40)}\n");
                }
            });
        }
        string[] lines = output.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(800, lines.Length);
        foreach (string line in lines)
        {
            var match = System.Text.RegularExpressions.Regex.Match(line, @"^\[UNCLASSIFIED (vm\d)\] (vm\d) line \d+ #{40}$");
            Assert.True(match.Success, line);
            Assert.Equal(match.Groups[1].Value, match.Groups[2].Value);
        }
    }

    private sealed class CharByCharWriter : TextWriter
    {
        private readonly System.Text.StringBuilder _sb = new();

        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

        public override void Write(char value)
        {
            _sb.Append(value);
            Thread.Yield();
        }

        public override string ToString() => _sb.ToString();
    }
}
