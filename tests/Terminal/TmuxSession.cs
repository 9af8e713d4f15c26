using System.Diagnostics;
using System.Text;

namespace SecureVmm.Tests.Terminal;

/// <summary>
/// A program running in a detached tmux session of a given size, on a private tmux server (its own
/// socket, no configuration file), so that the test sees exactly what a terminal would show and
/// types keys as a person would. Disposing kills the server and everything in it.
/// </summary>
internal sealed class TmuxSession : IDisposable
{
    private readonly string _tmux;
    private readonly string _socket = "svmm-test-" + Guid.NewGuid().ToString("N")[..12];
    private const string SessionName = "console";

    private TmuxSession(string tmux) => _tmux = tmux;

    public int Width { get; private init; }

    public int Height { get; private init; }

    /// <summary>Starts <paramref name="argv"/> in a new <paramref name="width"/>x<paramref name="height"/> session; its exit status goes to <paramref name="statusFile"/>.</summary>
    public static TmuxSession Start(string tmux, int width, int height, IReadOnlyList<string> argv, string workingDirectory, string statusFile)
    {
        var session = new TmuxSession(tmux) { Width = width, Height = height };
        string command = string.Join(' ', argv.Select(Quote)) + "; echo $? > " + Quote(statusFile);
        session.Run("new-session", "-d", "-x", width.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-y", height.ToString(System.Globalization.CultureInfo.InvariantCulture), "-s", SessionName, "-c", workingDirectory,
            "-e", "LANG=C.UTF-8", command);
        return session;
    }

    /// <summary>The screen now, one string per row, each padded to the full width.</summary>
    public string[] Capture()
    {
        string text = Run("capture-pane", "-p", "-t", SessionName);
        string[] rows = text.Split('\n');
        return [.. rows.Take(Height).Select(r => r.PadRight(Width))];
    }

    /// <summary>Types <paramref name="text"/> literally (no key names).</summary>
    public void Type(string text) => Run("send-keys", "-t", SessionName, "-l", text);

    /// <summary>Presses keys by tmux name ("Enter", "Tab", "C-a").</summary>
    public void Keys(params string[] keys) => Run(["send-keys", "-t", SessionName, .. keys]);

    /// <summary>Waits until <paramref name="condition"/> holds for the screen; returns the last screen either way.</summary>
    public (bool Met, string[] Screen) WaitFor(Func<string[], bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        string[] screen = [];
        while (true)
        {
            try
            {
                screen = Capture();
            }
            catch (InvalidOperationException)
            {
                return (false, screen); // the session ended (the program exited)
            }
            if (condition(screen))
            {
                return (true, screen);
            }
            if (clock.Elapsed > timeout)
            {
                return (false, screen);
            }
            Thread.Sleep(100);
        }
    }

    private string Run(params string[] args)
    {
        var start = new ProcessStartInfo(_tmux)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        start.Environment["LANG"] = "C.UTF-8";
        start.Environment.Remove("TMUX"); // a test run from inside tmux must not talk to that server
        foreach (string arg in (string[])["-u", "-L", _socket, "-f", "/dev/null", .. args])
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start tmux");
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(10_000))
        {
            process.Kill();
            throw new InvalidOperationException($"tmux {string.Join(' ', args)} did not finish");
        }
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"tmux {args[0]} failed ({process.ExitCode}): {stderr.Result.Trim()}");
        }
        return stdout;
    }

    private static string Quote(string arg) => "'" + arg.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    public void Dispose()
    {
        try
        {
            Run("kill-server");
        }
        catch (InvalidOperationException)
        {
            // the server already ended with its last session
        }
    }
}
