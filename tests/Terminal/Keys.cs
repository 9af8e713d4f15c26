namespace SecureVmm.Tests.Terminal;

/// <summary>Host keys as the terminal layer reports them.</summary>
internal static class Keys
{
    public static ConsoleKeyInfo Char(char c)
    {
        ConsoleKey key = c switch
        {
            >= 'a' and <= 'z' => ConsoleKey.A + (c - 'a'),
            >= 'A' and <= 'Z' => ConsoleKey.A + (c - 'A'),
            >= '0' and <= '9' => ConsoleKey.D0 + (c - '0'),
            ' ' => ConsoleKey.Spacebar,
            _ => ConsoleKey.NoName,
        };
        return new ConsoleKeyInfo(c, key, c is >= 'A' and <= 'Z', false, false);
    }

    public static IEnumerable<ConsoleKeyInfo> Text(string text) => text.Select(Char);

    public static ConsoleKeyInfo Ctrl(char letter) =>
        new((char)(char.ToUpperInvariant(letter) - 'A' + 1), ConsoleKey.A + (char.ToUpperInvariant(letter) - 'A'), false, false, true);

    public static ConsoleKeyInfo Special(ConsoleKey key, char c = '\0') => new(c, key, false, false, false);

    public static readonly ConsoleKeyInfo Enter = Special(ConsoleKey.Enter, '\r');
    public static readonly ConsoleKeyInfo Tab = Special(ConsoleKey.Tab, '\t');
    public static readonly ConsoleKeyInfo Backspace = Special(ConsoleKey.Backspace, '\u007f');
    public static readonly ConsoleKeyInfo EscapePrefix = Ctrl('a');
}
