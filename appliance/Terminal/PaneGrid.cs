namespace SecureVmm.Appliance.Terminal;

/// <summary>
/// How many columns and rows of panes fit a screen area best. Each pane wants to show an 80x25
/// text screen (the VGA text mode, and the usual serial terminal) inside its frame, so the grid is
/// the one whose panes come closest to that shape (the largest scale at which 80x25 fits every pane): two VMs on a wide
/// terminal sit side by side, on a tall one they stack, four make a 2x2 grid.
/// </summary>
public readonly record struct PaneGrid(int Columns, int Rows)
{
    /// <summary>The text screen a pane is sized for (VGA mode 3: 80 columns, 25 rows).</summary>
    public const int IdealColumns = 80, IdealRows = 25;

    /// <summary>Frame and padding around a pane's text: a border cell and a space each side, a border row above and below.</summary>
    public const int FrameColumns = 4, FrameRows = 2;

    public static PaneGrid Choose(int panes, int width, int height)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(panes, 1);
        var best = new PaneGrid(1, panes);
        double bestFit = -1;
        for (int columns = 1; columns <= panes; columns++)
        {
            int rows = (panes + columns - 1) / columns;
            if ((columns - 1) * rows >= panes)
            {
                continue; // a whole column would be empty
            }
            double fit = Math.Min(
                (double)(width / columns - FrameColumns) / IdealColumns,
                (double)(height / rows - FrameRows) / IdealRows);
            // Ties go to fewer, wider panes: serial lines are long, and wide panes read better.
            if (fit > bestFit + 1e-9)
            {
                best = new PaneGrid(columns, rows);
                bestFit = fit;
            }
        }
        return best;
    }

    /// <summary><paramref name="total"/> cells cut into <paramref name="parts"/> sizes differing by at most one.</summary>
    public static int[] Split(int total, int parts)
    {
        var sizes = new int[parts];
        for (int i = 0; i < parts; i++)
        {
            sizes[i] = total / parts + (i < total % parts ? 1 : 0);
        }
        return sizes;
    }
}
