using System.Globalization;
using System.Text;
using SecureVmm.Policy.Policy;
using Spectre.Console;

namespace SecureVmm.Appliance.Terminal;

/// <summary>
/// The text the appliance draws: labels and colours from the policy, and guest text made safe to
/// put on the host terminal. Everything a guest produced passes <see cref="Sanitize"/> before it is
/// drawn, even text that <see cref="SerialScreen"/> has already cleaned (defence in depth: a VGA
/// screen is a second path).
/// </summary>
public static class PaneText
{
    /// <summary>The focus marker. No guest can produce it: serial text is Latin-1 only and
    /// <see cref="Sanitize"/> replaces it in VGA text, so a guest cannot claim the focus.</summary>
    public const char FocusGlyph = '▶';

    /// <summary>The marker where the terminal cannot show <see cref="FocusGlyph"/>.</summary>
    public const char FocusGlyphAscii = '>';

    /// <summary>What a character the terminal must not receive is shown as.</summary>
    public const char Replacement = '?';

    /// <summary>The level as the policy spells it ("SECRET", "TOP SECRET").</summary>
    public static string Level(SecurityLabel label) => PolicyNames.Level(label.Level);

    /// <summary>"SECRET · secret-desktop": the label and the VM's name, as the frame title shows them.</summary>
    public static string Title(IConsolePane pane) => Level(pane.Label) + " · " + Sanitize(pane.VmName);

    /// <summary>
    /// <paramref name="text"/> with every character that could disturb the host terminal replaced:
    /// C0 and C1 controls and DEL (ECMA-48 5.2: they would reach the terminal as commands) become
    /// spaces; format characters, separators, surrogates, private-use and unassigned code points,
    /// anything whose width is not exactly one cell, and the focus marker become
    /// <see cref="Replacement"/>. One character in, one cell out, so the frame around it keeps its
    /// shape.
    /// </summary>
    public static string Sanitize(string text)
    {
        int i = 0;
        while (i < text.Length && IsSafe(text[i]))
        {
            i++;
        }
        if (i == text.Length)
        {
            return text; // the usual case: nothing to copy
        }
        var sb = new StringBuilder(text.Length);
        sb.Append(text, 0, i);
        for (; i < text.Length; i++)
        {
            char c = text[i];
            sb.Append(IsSafe(c) ? c : c < 0x20 || c is >= '\u007F' and <= '\u009F' ? ' ' : Replacement);
        }
        return sb.ToString();
    }

    public static bool IsSafe(char c)
    {
        if (c is >= ' ' and <= '~')
        {
            return true;
        }
        if (c < 0xA0 || c == FocusGlyph)
        {
            return false;
        }
        switch (CharUnicodeInfo.GetUnicodeCategory(c))
        {
            case UnicodeCategory.Control:
            case UnicodeCategory.Format:
            case UnicodeCategory.LineSeparator:
            case UnicodeCategory.ParagraphSeparator:
            case UnicodeCategory.Surrogate:
            case UnicodeCategory.PrivateUse:
            case UnicodeCategory.OtherNotAssigned:
            case UnicodeCategory.NonSpacingMark:
            case UnicodeCategory.EnclosingMark:
            case UnicodeCategory.SpacingCombiningMark:
                return false;
        }
        return c.GetCellWidth() == 1;
    }

    /// <summary><paramref name="text"/> cut to <paramref name="width"/> cells (all safe text is one cell a character).</summary>
    public static string Fit(string text, int width) => text.Length <= width ? text : text[..Math.Max(0, width)];

    public static string Count(long value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
