namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>Status-word bits (SDM vol.1 8.1.3, figure 8-4).</summary>
public static class X87Status
{
    public const ushort InvalidOperation = 0x0001;   // IE
    public const ushort DenormalOperand = 0x0002;    // DE
    public const ushort ZeroDivide = 0x0004;         // ZE
    public const ushort Overflow = 0x0008;           // OE
    public const ushort Underflow = 0x0010;          // UE
    public const ushort Precision = 0x0020;          // PE
    public const ushort StackFault = 0x0040;         // SF
    public const ushort ErrorSummary = 0x0080;       // ES
    public const ushort C0 = 0x0100;
    public const ushort C1 = 0x0200;
    public const ushort C2 = 0x0400;
    public const int TopShift = 11;
    public const ushort TopMask = 0x3800;
    public const ushort C3 = 0x4000;
    public const ushort Busy = 0x8000;               // B mirrors ES since the 80387

    public const ushort ExceptionFlags = 0x003F;
    public const ushort ConditionCodes = C0 | C1 | C2 | C3;
}

/// <summary>Control-word fields (SDM vol.1 8.1.5, figure 8-6).</summary>
public static class X87Control
{
    /// <summary>Power-on / FNINIT value: all exceptions masked, 64-bit precision, round to nearest (SDM vol.1 8.1.5).</summary>
    public const ushort Default = 0x037F;
    public const ushort ExceptionMasks = 0x003F;
    public const int PrecisionShift = 8;
    public const int RoundingShift = 10;
}

/// <summary>Rounding-control values (SDM vol.1 4.8.4, table 4-8).</summary>
public enum X87Rounding
{
    NearestEven = 0,
    Down = 1,
    Up = 2,
    TowardZero = 3,
}

/// <summary>
/// The per-operation rounding environment: the control word going in, and the exception flags
/// and C1 (round-up) indication coming out. A value type so that operations allocate nothing.
/// </summary>
public struct X87Arithmetic
{
    public ushort ControlWord;
    /// <summary>Exception flags (IE..PE, SF) raised by the operation.</summary>
    public ushort Flags;
    /// <summary>The last rounding increased the magnitude (reported in C1, SDM vol.1 8.1.3.3).</summary>
    public bool RoundedUp;

    public X87Arithmetic(ushort controlWord)
    {
        ControlWord = controlWord;
        Flags = 0;
        RoundedUp = false;
    }

    public readonly X87Rounding Rounding => (X87Rounding)((ControlWord >> X87Control.RoundingShift) & 3);

    /// <summary>Significand bits under precision control (00 = 24, 10 = 53, 11 = 64; 01 is reserved and treated as 64).</summary>
    public readonly int Precision => ((ControlWord >> X87Control.PrecisionShift) & 3) switch
    {
        0 => 24,
        2 => 53,
        _ => 64,
    };

    public readonly bool IsMasked(ushort flag) => (ControlWord & flag) != 0;

    /// <summary>True when a raised flag is unmasked (the operation's pre-computation exceptions suppress the result).</summary>
    public readonly bool Unmasked(ushort flags) => (Flags & flags & ~ControlWord & X87Status.ExceptionFlags) != 0;
}
