using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace SecureVmm.Appliance.Terminal;

/// <summary>What one frame shows besides the panes: the screen size and the appliance's own messages.</summary>
/// <param name="Unicode">The terminal shows Unicode (box drawing, the focus marker); otherwise ASCII frames.</param>
/// <param name="StatusReport">The status report overlay (Ctrl-A s), or null when closed.</param>
/// <param name="Banner">A message from the appliance, such as "stopping all VMs", or null.</param>
public sealed record ConsoleFrame(int Width, int Height, bool Unicode = true, string? StatusReport = null, string? Banner = null);

/// <summary>
/// Draws the console: every pane framed by its label in its label's colour, the focused one with a
/// double border and a focus marker, then one status row per VM and a key help row, all drawn by
/// the appliance. Guest text appears only inside a frame, as plain text (Spectre <see cref="Text"/>,
/// never markup), sanitized and cut to the frame's width and height, so it can neither leave its
/// pane nor change a frame, a label or the status rows.
/// </summary>
public static class ConsoleRenderer
{
    public const string FocusWord = "FOCUS";

    /// <summary>The smallest screen the panes are drawn on; below it a one-line notice says so.</summary>
    public const int MinWidth = 24, MinHeight = 8;

    public static IRenderable Build(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame)
    {
        ArgumentNullException.ThrowIfNull(panes);
        ArgumentNullException.ThrowIfNull(router);
        if (panes.Count != router.PaneCount)
        {
            throw new ArgumentException($"{panes.Count} panes but the router has {router.PaneCount}", nameof(panes));
        }
        if (frame.Width < MinWidth || frame.Height < MinHeight)
        {
            return TooSmall(panes, router, frame);
        }

        var rows = new List<Layout>();
        List<IRenderable> statusRows = StatusRows(panes, router, frame);
        int statusHeight = frame.Height - statusRows.Count - 1 >= MinHeight ? statusRows.Count : 1;
        if (statusHeight < statusRows.Count)
        {
            statusRows = [CompactStatus(panes, router, frame)];
        }
        int mainHeight = frame.Height - statusHeight - 1;

        if (frame.StatusReport is not null)
        {
            string[] report = frame.StatusReport.Replace("\r", "", StringComparison.Ordinal).Split('\n');
            int overlayHeight = Math.Min(report.Length + 2, mainHeight / 2);
            if (overlayHeight >= 3)
            {
                mainHeight -= overlayHeight;
                rows.Add(new Layout("panes", Panes(panes, router, frame, frame.Width, mainHeight)).Size(mainHeight));
                rows.Add(new Layout("report", Report(report, frame, overlayHeight)).Size(overlayHeight));
            }
        }
        if (rows.Count == 0)
        {
            rows.Add(new Layout("panes", Panes(panes, router, frame, frame.Width, mainHeight)).Size(mainHeight));
        }
        rows.Add(new Layout("status", new Rows(statusRows)).Size(statusHeight));
        rows.Add(new Layout("help", HelpRow(router, frame)).Size(1));
        return new Layout("console").SplitRows([.. rows]);
    }

    /// <summary>A frame as plain text (no colour, no escape sequences): for tests and logs.</summary>
    public static string RenderPlain(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame) =>
        Render(Build(panes, router, frame), frame, AnsiSupport.No, ColorSystemSupport.NoColors);

    /// <summary>A frame as the terminal receives it: with colour and styles in ANSI escape sequences.</summary>
    public static string RenderAnsi(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame, ColorSystemSupport colours) =>
        Render(Build(panes, router, frame), frame, AnsiSupport.Yes, colours);

    private static string Render(IRenderable renderable, ConsoleFrame frame, AnsiSupport ansi, ColorSystemSupport colours)
    {
        using var writer = new StringWriter();
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = ansi,
            ColorSystem = colours,
            Interactive = InteractionSupport.No,
            Enrichment = new ProfileEnrichment { UseDefaultEnrichers = false },
        });
        console.Profile.Width = frame.Width;
        console.Profile.Height = frame.Height;
        console.Profile.Capabilities.Unicode = frame.Unicode;
        console.Write(renderable);
        return writer.ToString();
    }

    private static IRenderable Panes(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame, int width, int height)
    {
        if (router.Layout == ConsoleLayout.Single)
        {
            return Pane(panes[router.Focus], router.Focus, router, frame, width, height);
        }
        PaneGrid grid = PaneGrid.Choose(panes.Count, width, height);
        int[] rowHeights = PaneGrid.Split(height, grid.Rows);
        var rowLayouts = new Layout[grid.Rows];
        for (int row = 0; row < grid.Rows; row++)
        {
            int first = row * grid.Columns;
            int count = Math.Min(grid.Columns, panes.Count - first);
            int[] widths = PaneGrid.Split(width, count); // a short last row widens its panes
            var cells = new Layout[count];
            for (int i = 0; i < count; i++)
            {
                cells[i] = new Layout(Pane(panes[first + i], first + i, router, frame, widths[i], rowHeights[row])).Size(widths[i]);
            }
            rowLayouts[row] = new Layout().SplitColumns(cells).Size(rowHeights[row]);
        }
        return new Layout().SplitRows(rowLayouts);
    }

    /// <summary>One VM's pane: a frame in the label's colour whose title the appliance writes, around the guest's screen.</summary>
    private static Panel Pane(IConsolePane pane, int index, KeyRouter router, ConsoleFrame frame, int width, int height)
    {
        bool focused = index == router.Focus;
        int innerWidth = Math.Max(0, width - PaneGrid.FrameColumns);
        int innerHeight = Math.Max(0, height - PaneGrid.FrameRows);
        bool serial = router.ShowsSerial(index);
        IReadOnlyList<string> lines = serial ? pane.Serial.Tail(innerHeight) : VgaLines(pane, innerHeight);
        var body = new StringBuilder();
        foreach (string line in lines)
        {
            if (body.Length > 0)
            {
                body.Append('\n');
            }
            body.Append(PaneText.Fit(PaneText.Sanitize(line), innerWidth));
        }

        var title = new StringBuilder();
        if (focused)
        {
            title.Append(frame.Unicode ? PaneText.FocusGlyph : PaneText.FocusGlyphAscii).Append(' ').Append(FocusWord).Append(" · ");
        }
        title.Append(index + 1).Append(' ').Append(PaneText.Title(pane));
        if (router.HasVga(index))
        {
            title.Append(serial ? " · serial log" : " · VGA");
        }
        PaneStatus status = pane.Status;
        if (status.State != PaneState.Running)
        {
            title.Append(" · ").Append(StateWord(status.State));
        }
        Color colour = PaneText.Colour(pane.Label.Colour);
        string titleText = PaneText.Fit(title.ToString(), Math.Max(0, width - 4));
        string titleStyle = focused ? $"bold {colour.ToMarkup()}" : colour.ToMarkup();
        return new Panel(new Text(body.ToString()) { Overflow = Overflow.Crop })
        {
            Header = new PanelHeader($"[{titleStyle}] {Markup.Escape(titleText)} [/]"),
            Border = focused ? BoxBorder.Double : BoxBorder.Square,
            BorderStyle = focused ? new Style(colour, decoration: Decoration.Bold) : new Style(colour),
            Padding = new Padding(1, 0, 1, 0),
            Expand = true,
            Height = height,
        };
    }

    /// <summary>The VGA text rows that fit, scrolled so that the cursor's row is visible.</summary>
    private static IReadOnlyList<string> VgaLines(IConsolePane pane, int rows)
    {
        Tcb.Devices.VgaScreen? screen = pane.VgaSnapshot();
        if (screen is null)
        {
            return ["(no VGA screen)"];
        }
        int shown = Math.Min(rows, screen.Rows);
        int first = Math.Clamp(screen.CursorRow - shown + 1, 0, screen.Rows - shown);
        var lines = new string[shown];
        for (int i = 0; i < shown; i++)
        {
            lines[i] = screen.Line(first + i);
        }
        return lines;
    }

    private static List<IRenderable> StatusRows(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame)
    {
        var rows = new List<IRenderable>(panes.Count + 1);
        if (frame.Banner is not null)
        {
            rows.Add(new Markup($"[bold reverse] {Markup.Escape(PaneText.Fit(PaneText.Sanitize(frame.Banner), frame.Width - 2))} [/]"));
        }
        for (int i = 0; i < panes.Count; i++)
        {
            IConsolePane pane = panes[i];
            PaneStatus status = pane.Status;
            char marker = i == router.Focus ? frame.Unicode ? PaneText.FocusGlyph : PaneText.FocusGlyphAscii : ' ';
            string label = $"{marker} {i + 1} {PaneText.Title(pane)}";
            string state = StateWord(status.State) + (status.Detail.Length > 0 ? ": " + status.Detail : "");
            string counters = $"  {PaneText.Count(status.Instructions)} instructions  {PaneText.Count(status.Exits)} exits";
            string rest = PaneText.Fit(PaneText.Sanitize("  " + state + counters), Math.Max(0, frame.Width - label.Length));
            rows.Add(new Markup(
                $"[{PaneText.Colour(pane.Label.Colour).ToMarkup()}]{Markup.Escape(PaneText.Fit(label, frame.Width))}[/]{Markup.Escape(rest)}")
            { Overflow = Overflow.Crop });
        }
        return rows;
    }

    /// <summary>All VMs on one row, for short screens.</summary>
    private static Markup CompactStatus(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < panes.Count; i++)
        {
            char marker = i == router.Focus ? frame.Unicode ? PaneText.FocusGlyph : PaneText.FocusGlyphAscii : ' ';
            sb.Append(marker).Append(i + 1).Append(' ').Append(PaneText.Level(panes[i].Label)).Append(' ')
                .Append(PaneText.Sanitize(panes[i].VmName)).Append(": ").Append(StateWord(panes[i].Status.State)).Append("  ");
        }
        string text = frame.Banner is null ? sb.ToString() : frame.Banner + "  " + sb;
        return new Markup(Markup.Escape(PaneText.Fit(PaneText.Sanitize(text), frame.Width))) { Overflow = Overflow.Crop };
    }

    private static Markup HelpRow(KeyRouter router, ConsoleFrame frame)
    {
        var sb = new StringBuilder();
        if (router.Notice is not null)
        {
            sb.Append(router.Notice).Append(" | ");
        }
        sb.Append(router.EscapePending ? "Ctrl-A pressed, now: " : "Ctrl-A then ");
        foreach (var (_, shown, _, help) in KeyRouter.EscapeCommands)
        {
            sb.Append(shown).Append(' ').Append(help).Append(" · ");
        }
        sb.Append("Ctrl-C stop all");
        string text = Markup.Escape(PaneText.Fit(sb.ToString(), frame.Width));
        return new Markup(router.EscapePending ? $"[bold reverse]{text}[/]" : $"[dim]{text}[/]") { Overflow = Overflow.Crop };
    }

    private static Panel Report(string[] lines, ConsoleFrame frame, int height)
    {
        int innerWidth = Math.Max(0, frame.Width - PaneGrid.FrameColumns);
        string body = string.Join('\n', lines.Take(height - 2).Select(l => PaneText.Fit(PaneText.Sanitize(l), innerWidth)));
        return new Panel(new Text(body) { Overflow = Overflow.Crop })
        {
            Header = new PanelHeader("[bold] Status (Ctrl-A s closes) [/]"),
            Border = BoxBorder.Heavy,
            Padding = new Padding(1, 0, 1, 0),
            Expand = true,
            Height = height,
        };
    }

    private static IRenderable TooSmall(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame)
    {
        string text = $"terminal {frame.Width}x{frame.Height} is too small (needs {MinWidth}x{MinHeight}); " +
            $"focus: {PaneText.Title(panes[router.Focus])}";
        return new Text(PaneText.Fit(PaneText.Sanitize(text), frame.Width)) { Overflow = Overflow.Crop };
    }

    private static string StateWord(PaneState state) => state switch
    {
        PaneState.Running => "running",
        PaneState.Paused => "paused",
        PaneState.Stopped => "stopped",
        _ => state.ToString(),
    };
}
