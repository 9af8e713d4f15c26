namespace SecureVmm.Appliance.Terminal;

/// <summary>
/// The console for when standard output is not a terminal (CI, scripts, a log file): each completed
/// serial line of each VM is written as one line, prefixed by the label the appliance draws from the
/// policy, e.g. "[SECRET kiosk] kiosk: uptime 3 s". The prefix opens every line and a guest cannot
/// end a line early (its text holds no line breaks or escapes), so no guest can print a line that
/// seems to come from another VM. Lines from several VMs are written whole, never interleaved.
/// </summary>
public sealed class LineLog : IDisposable
{
    private readonly TextWriter _output;
    private readonly Lock _lock = new();
    private readonly List<(IConsolePane Pane, Action<string> Handler)> _subscriptions = [];
    private bool _disposed;

    private LineLog(TextWriter output) => _output = output;

    /// <summary>Starts logging every pane's serial lines to <paramref name="output"/> until disposed.</summary>
    public static LineLog Attach(IReadOnlyList<IConsolePane> panes, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(panes);
        ArgumentNullException.ThrowIfNull(output);
        var log = new LineLog(output);
        foreach (IConsolePane pane in panes)
        {
            string prefix = Prefix(pane);
            Action<string> handler = line => log.Write(prefix, line);
            pane.Serial.LineCompleted += handler;
            log._subscriptions.Add((pane, handler));
        }
        return log;
    }

    /// <summary>"[SECRET kiosk] ": the level as the policy spells it and the VM's name.</summary>
    public static string Prefix(IConsolePane pane) => $"[{PaneText.Level(pane.Label)} {PaneText.Sanitize(pane.VmName)}] ";

    /// <summary>An appliance message about a VM (e.g. why it stopped), in the same format.</summary>
    public void Note(IConsolePane pane, string message) => Write(Prefix(pane), "-- " + message);

    private void Write(string prefix, string line)
    {
        string text = prefix + PaneText.Sanitize(line);
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            try
            {
                _output.WriteLine(text);
                _output.Flush();
            }
            catch (IOException)
            {
                // The reader went away (closed pipe); the VMs keep running, their lines have nowhere to go.
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>Stops logging; an unfinished last line of each VM (a prompt, typically) is written as it stands.</summary>
    public void Dispose()
    {
        foreach (var (pane, handler) in _subscriptions)
        {
            pane.Serial.LineCompleted -= handler;
        }
        foreach (var (pane, _) in _subscriptions)
        {
            string partial = pane.Serial.CurrentLine;
            if (partial.Length > 0)
            {
                Write(Prefix(pane), partial);
            }
        }
        lock (_lock)
        {
            _disposed = true;
        }
    }
}
