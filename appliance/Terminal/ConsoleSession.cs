using System.Diagnostics;

namespace SecureVmm.Appliance.Terminal;

/// <summary>
/// The console's state between frames and what each key does to the VMs, without the terminal:
/// <see cref="ConsoleView"/> feeds it host keys and draws <see cref="Frame"/>, tests feed it keys
/// directly. Typed bytes go only to the focused pane, and never to a stopped one.
/// </summary>
public sealed class ConsoleSession
{
    private static readonly TimeSpan StatusRefreshInterval = TimeSpan.FromSeconds(1);

    private readonly IReadOnlyList<IConsolePane> _panes;
    private readonly ConsoleControls _controls;
    private readonly byte[] _bytes = new byte[KeyRouter.MaxBytesPerKey];
    private readonly Stopwatch _reportAge = new();
    private Stopwatch? _stopping;

    public ConsoleSession(IReadOnlyList<IConsolePane> panes, ConsoleControls controls)
    {
        ArgumentNullException.ThrowIfNull(panes);
        ArgumentNullException.ThrowIfNull(controls);
        _panes = panes;
        _controls = controls;
        Router = KeyRouter.For(panes);
    }

    public KeyRouter Router { get; }

    public IReadOnlyList<IConsolePane> Panes => _panes;

    /// <summary>The status report shown (Ctrl-A s toggles it), or null.</summary>
    public string? Report { get; private set; }

    /// <summary>StopAll has been called; the console ends once every pane has stopped.</summary>
    public bool Stopping => _stopping is not null;

    /// <summary>Time since StopAll was called.</summary>
    public TimeSpan StoppingFor => _stopping?.Elapsed ?? TimeSpan.Zero;

    public bool AllStopped => _panes.All(p => p.Status.State == PaneState.Stopped);

    /// <summary>Routes one host key: input to the focused VM, or a console command.</summary>
    public void Key(ConsoleKeyInfo key)
    {
        KeyOutcome outcome = Router.Handle(key, _bytes);
        switch (outcome.Action)
        {
            case KeyAction.Input:
                IConsolePane target = _panes[outcome.Pane];
                if (target.Status.State != PaneState.Stopped)
                {
                    target.SendInput(_bytes.AsSpan(0, outcome.ByteCount));
                }
                break;
            case KeyAction.ShowStatus:
                Report = Report is null ? _controls.StatusReport() : null;
                _reportAge.Restart();
                break;
            case KeyAction.StopFocused:
                _controls.StopVm(_panes[outcome.Pane]);
                break;
            case KeyAction.StopAll:
                StopAll();
                break;
        }
    }

    /// <summary>Asks the runtime to stop every VM (once).</summary>
    public void StopAll()
    {
        if (_stopping is null)
        {
            _stopping = Stopwatch.StartNew();
            _controls.StopAll();
        }
    }

    /// <summary>Periodic work between keys: the status report shown is refreshed every second.</summary>
    public void Tick()
    {
        if (Report is not null && _reportAge.Elapsed >= StatusRefreshInterval)
        {
            Report = _controls.StatusReport();
            _reportAge.Restart();
        }
    }

    public ConsoleFrame Frame(int width, int height, bool unicode) =>
        new(width, height, unicode, Report, !Stopping ? null : AllStopped ? "all VMs stopped" : "stopping all VMs...");
}
