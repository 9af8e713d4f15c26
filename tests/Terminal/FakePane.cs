using System.Text;
using SecureVmm.Appliance.Terminal;
using SecureVmm.Policy.Policy;
using SecureVmm.Tcb.Devices;

namespace SecureVmm.Tests.Terminal;

/// <summary>A pane with no VM behind it: a serial screen the test writes to, an optional VGA screen, and a record of the input it was sent.</summary>
internal sealed class FakePane(string name, ClassificationLevel level, LabelColour colour, ConsoleKind kind = ConsoleKind.Serial) : IConsolePane
{
    private readonly List<byte> _input = [];

    public string VmName => name;

    public SecurityLabel Label { get; } = new(level, colour);

    public ConsoleKind Kind => kind;

    public SerialScreen Serial { get; } = new(100);

    public VgaScreen? Vga { get; set; }

    public VgaScreen? VgaSnapshot() => Vga;

    public PaneStatus Status { get; set; } = new(PaneState.Running, "", 0, 0);

    public byte[] Input
    {
        get
        {
            lock (_input)
            {
                return [.. _input];
            }
        }
    }

    public void SendInput(ReadOnlySpan<byte> bytes)
    {
        lock (_input)
        {
            _input.AddRange(bytes.ToArray());
        }
    }

    /// <summary>What the guest "prints" on its serial port, byte by byte.</summary>
    public void Print(string text) => Print(Encoding.UTF8.GetBytes(text));

    public void Print(byte[] bytes)
    {
        foreach (byte b in bytes)
        {
            Serial.Transmit(b);
        }
    }

    public static VgaScreen Screen(params string[] rows)
    {
        var chars = new char[80 * 25];
        Array.Fill(chars, ' ');
        for (int r = 0; r < rows.Length; r++)
        {
            rows[r].AsSpan(0, Math.Min(80, rows[r].Length)).CopyTo(chars.AsSpan(r * 80));
        }
        return new VgaScreen(80, 25, chars, new byte[80 * 25], Math.Max(0, rows.Length - 1), 0, true);
    }
}
