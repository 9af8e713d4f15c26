using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Spectre.Console;

namespace SecureVmm.Appliance.Terminal;

/// <summary>What the console may ask of the runtime.</summary>
/// <param name="StopVm">Stop one VM (Ctrl-A k); returns at once, the pane's status shows when it has stopped.</param>
/// <param name="StopAll">Stop every VM (Ctrl-A x, Ctrl-C, SIGTERM); returns at once.</param>
/// <param name="StatusReport">The appliance's status report as text (Ctrl-A s).</param>
public sealed record ConsoleControls(Action<IConsolePane> StopVm, Action StopAll, Func<string> StatusReport);

/// <summary>
/// The full-screen live console on a real terminal. It takes the terminal over (alternate screen,
/// hidden cursor, keys read one at a time without echo, Ctrl-C as a key), draws every VM with
/// <see cref="ConsoleRenderer"/> after every key and about ten times a second (sending a frame only when it differs from the last), routes keys with
/// <see cref="KeyRouter"/>, and gives the terminal back in every case: on Ctrl-A x, Ctrl-C,
/// SIGTERM/SIGHUP/SIGQUIT, cancellation, or an exception.
/// </summary>
public static class ConsoleView
{
    /// <summary>How long the console waits for the VMs to stop after StopAll before it gives up on them.</summary>
    public static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(15);

    private static readonly TimeSpan RedrawInterval = TimeSpan.FromMilliseconds(100);

    // Terminal modes (xterm control sequences, "Private Mode" DECSET/DECRST): 1049 is the alternate
    // screen with the cursor saved, 25 the visible cursor (DECTCEM). SGR 0 resets colours.
    private const string EnterScreen = "\e[?1049h\e[?25l\e[2J";
    private const string LeaveScreen = "\e[0m\e[?25h\e[?1049l";

    /// <summary>
    /// Whether the live console can run here: standard input and output are a terminal that can
    /// position the cursor (TERM is not "dumb"). Otherwise the runtime should use <see cref="LineLog"/>.
    /// </summary>
    public static bool TerminalAvailable =>
        !Console.IsOutputRedirected && !Console.IsInputRedirected &&
        !string.Equals(Environment.GetEnvironmentVariable("TERM"), "dumb", StringComparison.Ordinal);

    /// <summary>
    /// Runs the console until every VM has stopped after StopAll (Ctrl-A x, Ctrl-C, a termination
    /// signal), or until <paramref name="cancel"/> fires. Returns 0 then; 70 when the VMs did not
    /// stop within <see cref="StopTimeout"/> (a VMM fault).
    /// </summary>
    public static int Run(IReadOnlyList<IConsolePane> panes, ConsoleControls controls, CancellationToken cancel)
    {
        ArgumentNullException.ThrowIfNull(panes);
        ArgumentNullException.ThrowIfNull(controls);
        var session = new ConsoleSession(panes, controls);
        int stopRequested = 0;
        void RequestStop() => Interlocked.Exchange(ref stopRequested, 1);

        // Signals the operator or the system may send: stop the VMs cleanly and give the terminal
        // back rather than die with it in raw mode on the alternate screen.
        var signals = new List<PosixSignalRegistration>();
        foreach (PosixSignal signal in new[] { PosixSignal.SIGTERM, PosixSignal.SIGHUP, PosixSignal.SIGQUIT, PosixSignal.SIGINT })
        {
            signals.Add(PosixSignalRegistration.Create(signal, context =>
            {
                context.Cancel = true;
                RequestStop();
            }));
        }

        bool keys = !Console.IsInputRedirected;
        bool oldTreatControlC = false;
        var output = Console.Out;
        try
        {
            if (keys)
            {
                oldTreatControlC = Console.TreatControlCAsInput;
                Console.TreatControlCAsInput = true; // Ctrl-C is a key here: it stops every VM cleanly
            }
            output.Write(EnterScreen);
            output.Flush();
            return Loop(session, keys, () => Volatile.Read(ref stopRequested) != 0, output, cancel);
        }
        finally
        {
            output.Write(LeaveScreen);
            output.Flush();
            if (keys)
            {
                try
                {
                    Console.TreatControlCAsInput = oldTreatControlC;
                }
                catch (IOException)
                {
                    // the terminal went away; nothing left to restore
                }
            }
            foreach (PosixSignalRegistration registration in signals)
            {
                registration.Dispose();
            }
        }
    }

    private static int Loop(ConsoleSession session, bool keys, Func<bool> signalled, TextWriter output, CancellationToken cancel)
    {
        ColourMode colours = DetectColours();
        string previous = "";
        bool unicode = Console.OutputEncoding.CodePage == Encoding.UTF8.CodePage;
        var lastDraw = Stopwatch.StartNew();
        bool dirty = true;
        (int Width, int Height) size = (0, 0);

        while (!cancel.IsCancellationRequested)
        {
            while (keys && KeyAvailable())
            {
                session.Key(Console.ReadKey(intercept: true));
                dirty = true;
            }
            if (signalled())
            {
                session.StopAll();
            }
            session.Tick();

            bool allStopped = session.AllStopped;
            (int Width, int Height) now = WindowSize();
            if (now != size)
            {
                size = now;
                output.Write("\e[2J"); // the old frame's cells outside the new size must not linger
                previous = "";
                dirty = true;
            }
            if (dirty || lastDraw.Elapsed >= RedrawInterval || allStopped)
            {
                ConsoleFrame frame = session.Frame(size.Width, size.Height, unicode);
                string screen = ConsoleRenderer.RenderAnsi(session.Panes, session.Router, frame, colours);
                if (screen != previous)
                {
                    output.Write(screen); // one write: rows at absolute positions, so nothing scrolls or flickers
                    output.Flush();
                    previous = screen;
                }
                lastDraw.Restart();
                dirty = false;
            }
            if (session.Stopping)
            {
                if (allStopped)
                {
                    return Cli.ExitOk;
                }
                if (session.StoppingFor > StopTimeout)
                {
                    output.Write(LeaveScreen);
                    Console.Error.WriteLine($"securevmm: the VMs did not stop within {StopTimeout.TotalSeconds:0} s of the stop request (a VMM fault)");
                    return 70;
                }
            }
            cancel.WaitHandle.WaitOne(keys ? 10 : 50);
        }
        return Cli.ExitOk;
    }

    private static bool KeyAvailable()
    {
        try
        {
            return Console.KeyAvailable;
        }
        catch (InvalidOperationException)
        {
            return false; // no console input after all
        }
    }

    private static (int Width, int Height) WindowSize()
    {
        try
        {
            int width = Console.WindowWidth, height = Console.WindowHeight;
            return width > 0 && height > 0 ? (width, height) : (80, 24);
        }
        catch (IOException)
        {
            return (80, 24);
        }
    }

    /// <summary>The colours the terminal supports, as Spectre.Console detects them (it honours NO_COLOR, TERM and COLORTERM).</summary>
    private static ColourMode DetectColours() => AnsiConsole.Profile.Capabilities.ColorSystem switch
    {
        ColorSystem.NoColors => ColourMode.None,
        ColorSystem.Legacy or ColorSystem.Standard => ColourMode.Basic,
        _ => ColourMode.Palette256,
    };
}
