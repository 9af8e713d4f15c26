using System.Text;
using SecureVmm.Policy.Policy;

namespace SecureVmm.Appliance.Terminal;

/// <summary>How many colours the terminal shows.</summary>
public enum ColourMode
{
    /// <summary>No colour, no styles (plain text).</summary>
    None,

    /// <summary>The 16 ECMA-48/aixterm colours (SGR 30-37, 90-97) and bold/dim/reverse.</summary>
    Basic,

    /// <summary>xterm's 256-colour palette (SGR 38;5;N).</summary>
    Palette256,
}

/// <summary>A cell's look: a label colour (or the default), and bold, dim, reverse.</summary>
public readonly record struct CellStyle(LabelColour? Colour = null, bool Bold = false, bool Dim = false, bool Reverse = false)
{
    public static readonly CellStyle Plain = new();
}

/// <summary>Which lines a box is drawn with.</summary>
public enum BoxLines
{
    /// <summary>Single thin lines (an unfocused pane).</summary>
    Single,

    /// <summary>Double lines (the focused pane).</summary>
    Double,

    /// <summary>Heavy lines (the appliance's status report).</summary>
    Heavy,
}

/// <summary>
/// The screen as a grid of cells, each one character of one terminal cell and a style, that the
/// console draws into and then sends in one piece. Every character put here is one cell wide
/// (<see cref="PaneText.IsSafe"/>; anything else is replaced), and text is clipped to the area it
/// is given, so nothing can spill over a frame. Rows are written with absolute cursor positions,
/// so the terminal never scrolls. (Hand-made rather than Spectre.Console's Layout and Panel: the
/// console redraws ten times a second next to running VMs, and a 160x48 frame of two full panes
/// took about 20 ms with those widgets and takes about 0.7 ms here; `bench -- console`.)
/// </summary>
public sealed class CellGrid
{
    // Box-drawing characters (Unicode block U+2500), and the ASCII stand-ins for terminals without
    // Unicode: corner TL, TR, BL, BR, horizontal, vertical.
    private static readonly string[] UnicodeBoxes = ["┌┐└┘─│", "╔╗╚╝═║", "┏┓┗┛━┃"];
    private static readonly string[] AsciiBoxes = ["++++-|", "####=#", "****-*"];

    private readonly char[] _chars;
    private readonly CellStyle[] _styles;

    public CellGrid(int width, int height, bool unicode = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        Width = width;
        Height = height;
        Unicode = unicode;
        _chars = new char[width * height];
        _styles = new CellStyle[width * height];
        Array.Fill(_chars, ' ');
    }

    public int Width { get; }

    public int Height { get; }

    public bool Unicode { get; }

    public char this[int row, int column] => _chars[row * Width + column];

    /// <summary>
    /// Writes <paramref name="text"/> from (row, column), clipped to <paramref name="maxWidth"/>
    /// cells and the screen. Characters that are not one safe cell become '?' (controls a space);
    /// only the appliance's own text (<paramref name="appliance"/>) may carry the focus marker.
    /// </summary>
    /// <returns>The column after the last cell written.</returns>
    public int Put(int row, int column, string text, CellStyle style, int maxWidth = int.MaxValue, bool appliance = false)
    {
        if (row < 0 || row >= Height || column < 0)
        {
            return column;
        }
        int end = (int)Math.Min((long)column + Math.Min(maxWidth, text.Length), Width);
        int at = row * Width;
        for (int i = 0; column < end; i++, column++)
        {
            char c = text[i];
            _chars[at + column] = PaneText.IsSafe(c) || (appliance && c == PaneText.FocusGlyph && Unicode) ? c : c < ' ' ? ' ' : PaneText.Replacement;
            _styles[at + column] = style;
        }
        return column;
    }

    /// <summary>Draws a box's outline with its title on the top edge ("┌─ title ───┐").</summary>
    public void Box(int row, int column, int width, int height, BoxLines lines, CellStyle style, string title, CellStyle titleStyle)
    {
        if (width < 2 || height < 2)
        {
            return;
        }
        string box = (Unicode ? UnicodeBoxes : AsciiBoxes)[(int)lines];
        string horizontal = new(box[4], width - 2);
        Put(row, column, box[0] + horizontal + box[1], style);
        Put(row + height - 1, column, box[2] + horizontal + box[3], style);
        for (int r = row + 1; r < row + height - 1; r++)
        {
            Put(r, column, box[5].ToString(), style);
            Put(r, column + width - 1, box[5].ToString(), style);
        }
        if (title.Length > 0 && width > 6)
        {
            Put(row, column + 2, " " + title + " ", titleStyle, width - 4, appliance: true);
        }
    }

    /// <summary>The screen as plain text: one line per row, each exactly <see cref="Width"/> cells.</summary>
    public string ToPlainText()
    {
        var sb = new StringBuilder((Width + 1) * Height);
        for (int row = 0; row < Height; row++)
        {
            sb.Append(_chars, row * Width, Width).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>
    /// The screen as the terminal receives it: each row placed with CUP (ECMA-48 8.3.21), styles as
    /// SGR (8.3.117), every row ending with its attributes reset.
    /// </summary>
    public string ToAnsi(ColourMode mode)
    {
        var sb = new StringBuilder(Width * Height * 2);
        for (int row = 0; row < Height; row++)
        {
            sb.Append("\e[").Append(row + 1).Append(";1H\e[0m");
            CellStyle current = CellStyle.Plain;
            int at = row * Width;
            for (int column = 0; column < Width; column++)
            {
                CellStyle style = _styles[at + column];
                if (style != current && mode != ColourMode.None)
                {
                    AppendSgr(sb, style, mode);
                    current = style;
                }
                sb.Append(_chars[at + column]);
            }
            sb.Append("\e[0m");
        }
        return sb.ToString();
    }

    private static void AppendSgr(StringBuilder sb, CellStyle style, ColourMode mode)
    {
        sb.Append("\e[0");
        if (style.Bold)
        {
            sb.Append(";1");
        }
        if (style.Dim)
        {
            sb.Append(";2");
        }
        if (style.Reverse)
        {
            sb.Append(";7");
        }
        if (style.Colour is LabelColour colour)
        {
            var (basic, palette) = Colours[(int)colour];
            if (mode == ColourMode.Palette256)
            {
                sb.Append(";38;5;").Append(palette);
            }
            else
            {
                sb.Append(';').Append(basic);
            }
        }
        sb.Append('m');
    }

    /// <summary>
    /// Each label colour as an SGR foreground: the 16-colour code (bright variants 90-97 where they
    /// read better on dark backgrounds; orange has none and takes yellow) and the xterm 256-colour index.
    /// Indexed by <see cref="LabelColour"/>.
    /// </summary>
    private static readonly (int Basic, int Palette)[] Colours =
    [
        (92, 46),  // Green
        (94, 33),  // Blue
        (93, 226), // Yellow
        (33, 208), // Orange
        (91, 196), // Red
        (95, 129), // Purple
        (37, 245), // Grey
    ];
}
