using System.Text;

namespace SecureVmm.Appliance.Terminal;

/// <summary>What one frame shows besides the panes: the screen size and the appliance's own messages.</summary>
/// <param name="Unicode">The terminal shows Unicode (box drawing, the focus marker); otherwise ASCII frames.</param>
/// <param name="StatusReport">The status report overlay (Ctrl-A s), or null when closed.</param>
/// <param name="Banner">A message from the appliance, such as "stopping all VMs", or null.</param>
public sealed record ConsoleFrame(int Width, int Height, bool Unicode = true, string? StatusReport = null, string? Banner = null);

/// <summary>
/// Draws the console: every pane framed by its label in its label's colour, the focused one with a
/// double border and a focus marker, then one status row per VM and a key help row, all drawn by
/// the appliance. Guest text appears only inside a frame, sanitized and clipped to the frame's
/// width and height, so it can neither leave its pane nor change a frame, a label or the status rows.
/// </summary>
public static class ConsoleRenderer
{
    public const string FocusWord = "FOCUS";

    /// <summary>The smallest screen the panes are drawn on; below it a one-line notice says so.</summary>
    public const int MinWidth = 24, MinHeight = 8;

    /// <summary>Draws a frame into a new grid.</summary>
    public static CellGrid Draw(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame)
    {
        ArgumentNullException.ThrowIfNull(panes);
        ArgumentNullException.ThrowIfNull(router);
        if (panes.Count != router.PaneCount)
        {
            throw new ArgumentException($"{panes.Count} panes but the router has {router.PaneCount}", nameof(panes));
        }
        var grid = new CellGrid(Math.Max(1, frame.Width), Math.Max(1, frame.Height), frame.Unicode);
        if (frame.Width < MinWidth || frame.Height < MinHeight)
        {
            string text = $"terminal {frame.Width}x{frame.Height} is too small (needs {MinWidth}x{MinHeight}); focus: {PaneText.Title(panes[router.Focus])}";
            grid.Put(0, 0, text, CellStyle.Plain);
            return grid;
        }

        // Bottom up: the help row, the status rows (one per VM when there is room), the report, the panes.
        int helpRow = frame.Height - 1;
        DrawHelp(grid, helpRow, router);
        int statusRows = panes.Count + (frame.Banner is null ? 0 : 1);
        bool compact = frame.Height - 1 - statusRows < MinHeight;
        int statusTop = helpRow - (compact ? 1 : statusRows);
        DrawStatus(grid, statusTop, compact, panes, router, frame);

        int mainHeight = statusTop;
        if (frame.StatusReport is not null)
        {
            string[] report = frame.StatusReport.Replace("\r", "", StringComparison.Ordinal).Split('\n');
            int reportHeight = Math.Min(report.Length + 2, mainHeight / 2);
            if (reportHeight >= 3)
            {
                mainHeight -= reportHeight;
                grid.Box(mainHeight, 0, frame.Width, reportHeight, BoxLines.Heavy, new CellStyle(Bold: true),
                    "Status (Ctrl-A s closes)", new CellStyle(Bold: true));
                for (int i = 0; i < Math.Min(report.Length, reportHeight - 2); i++)
                {
                    grid.Put(mainHeight + 1 + i, 2, PaneText.Sanitize(report[i]), CellStyle.Plain, frame.Width - 4);
                }
            }
        }

        if (router.Layout == ConsoleLayout.Single)
        {
            DrawPane(grid, panes[router.Focus], router.Focus, router, 0, 0, frame.Width, mainHeight);
            return grid;
        }
        PaneGrid layout = PaneGrid.Choose(panes.Count, frame.Width, mainHeight);
        int[] heights = PaneGrid.Split(mainHeight, layout.Rows);
        int top = 0;
        for (int row = 0; row < layout.Rows; row++)
        {
            int first = row * layout.Columns;
            int count = Math.Min(layout.Columns, panes.Count - first);
            int[] widths = PaneGrid.Split(frame.Width, count); // a short last row widens its panes
            int left = 0;
            for (int i = 0; i < count; i++)
            {
                DrawPane(grid, panes[first + i], first + i, router, top, left, widths[i], heights[row]);
                left += widths[i];
            }
            top += heights[row];
        }
        return grid;
    }

    /// <summary>A frame as plain text (no colour, no escape sequences): for tests and logs.</summary>
    public static string RenderPlain(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame) =>
        Draw(panes, router, frame).ToPlainText();

    /// <summary>A frame as the terminal receives it: rows at absolute positions, colours and styles as SGR.</summary>
    public static string RenderAnsi(IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame, ColourMode colours) =>
        Draw(panes, router, frame).ToAnsi(colours);

    /// <summary>One VM's pane: a frame in the label's colour whose title the appliance writes, around the guest's screen.</summary>
    private static void DrawPane(CellGrid grid, IConsolePane pane, int index, KeyRouter router, int top, int left, int width, int height)
    {
        bool focused = index == router.Focus;
        bool serial = router.ShowsSerial(index);
        var title = new StringBuilder();
        if (focused)
        {
            title.Append(grid.Unicode ? PaneText.FocusGlyph : PaneText.FocusGlyphAscii).Append(' ').Append(FocusWord).Append(" · ");
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
        var colour = new CellStyle(pane.Label.Colour, Bold: focused);
        grid.Box(top, left, width, height, focused ? BoxLines.Double : BoxLines.Single, colour, title.ToString(), colour);

        // A space inside each border, except where that would cut a VGA screen's 80 columns.
        int padding = serial || width - PaneGrid.FrameColumns >= Tcb.Devices.VgaText.Columns ? 1 : 0;
        int innerWidth = width - 2 - 2 * padding;
        int innerHeight = height - PaneGrid.FrameRows;
        if (innerWidth < 1 || innerHeight < 1)
        {
            return;
        }
        IReadOnlyList<string> lines = serial ? pane.Serial.Tail(innerHeight) : VgaLines(pane, innerHeight);
        for (int i = 0; i < lines.Count && i < innerHeight; i++)
        {
            grid.Put(top + 1 + i, left + 1 + padding, PaneText.Sanitize(lines[i]), CellStyle.Plain, innerWidth);
        }
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

    private static void DrawStatus(CellGrid grid, int top, bool compact, IReadOnlyList<IConsolePane> panes, KeyRouter router, ConsoleFrame frame)
    {
        char focusGlyph = frame.Unicode ? PaneText.FocusGlyph : PaneText.FocusGlyphAscii;
        int row = top;
        int column = 0;
        if (frame.Banner is not null)
        {
            column = grid.Put(row, 0, " " + PaneText.Sanitize(frame.Banner) + " ", new CellStyle(Bold: true, Reverse: true));
            if (!compact)
            {
                row++;
                column = 0;
            }
            else
            {
                column++;
            }
        }
        for (int i = 0; i < panes.Count; i++)
        {
            IConsolePane pane = panes[i];
            PaneStatus status = pane.Status;
            string marker = i == router.Focus ? focusGlyph + " " : "  ";
            var label = new CellStyle(pane.Label.Colour, Bold: i == router.Focus);
            if (compact)
            {
                column = grid.Put(row, column, $"{marker}{i + 1} {PaneText.Level(pane.Label)} {PaneText.Sanitize(pane.VmName)}", label, appliance: true);
                column = grid.Put(row, column, $": {StateWord(status.State)}  ", CellStyle.Plain);
                continue;
            }
            column = grid.Put(row, 0, $"{marker}{i + 1} {PaneText.Title(pane)}", label, appliance: true);
            string state = StateWord(status.State) + (status.Detail.Length > 0 ? ": " + status.Detail : "");
            grid.Put(row, column, PaneText.Sanitize(
                $"  {state}  {PaneText.Count(status.Instructions)} instructions  {PaneText.Count(status.Exits)} exits"), CellStyle.Plain);
            row++;
        }
    }

    private static void DrawHelp(CellGrid grid, int row, KeyRouter router)
    {
        var sb = new StringBuilder();
        if (router.Notice is not null)
        {
            sb.Append(router.Notice).Append(" | ");
        }
        sb.Append(router.EscapePending ? "Ctrl-A pressed, now:" : "Ctrl-A then:");
        string separator = " ";
        foreach (var (_, shown, _, help) in KeyRouter.EscapeCommands)
        {
            sb.Append(separator).Append(shown).Append(' ').Append(help);
            separator = " · ";
        }
        sb.Append(" | Ctrl-C stops all");
        grid.Put(row, 0, sb.ToString(), router.EscapePending ? new CellStyle(Bold: true, Reverse: true) : new CellStyle(Dim: true));
    }

    private static string StateWord(PaneState state) => state switch
    {
        PaneState.Running => "running",
        PaneState.Paused => "paused",
        PaneState.Stopped => "stopped",
        _ => state.ToString(),
    };
}
