using SecureVmm.Tcb.Devices;

namespace SecureVmm.Tests.Devices;

/// <summary>Records what devices do to their IRQ lines: current level and rising edges per line.</summary>
internal sealed class IrqRecorder : IIrqLines
{
    public readonly bool[] Level = new bool[16];
    public readonly int[] RisingEdges = new int[16];

    public void SetIrq(int line, bool level)
    {
        if (level && !Level[line])
        {
            RisingEdges[line]++;
        }
        Level[line] = level;
    }
}

internal static class PortExtensions
{
    public static byte In(this IPortDevice device, int port) => (byte)device.Read((ushort)port, 1);

    public static void Out(this IPortDevice device, int port, int value) => device.Write((ushort)port, 1, (uint)value);
}
