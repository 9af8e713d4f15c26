using Xunit;
using System.Buffers.Binary;
using Iced.Intel;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Cpu.X87;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.X87;

public class X87UnitTests
{
    private static readonly Float80 Pi = new(0x4000, 0xC90F_DAA2_2168_C235UL);

    [Fact]
    public void ResetGivesTheFninitState()
    {
        var h = new X87Harness();
        Assert.Equal(0x037F, h.Unit.ControlWord);
        Assert.Equal(0, h.Unit.StatusWord);
        Assert.Equal(0xFFFF, h.Unit.TagWord);
        h.PushDouble(1.5);
        h.Ok(a => a.fninit());
        Assert.Equal(0xFFFF, h.Unit.TagWord);
        Assert.Equal(0, h.Unit.Top);
    }

    [Fact]
    public void StackPushPopAndTags()
    {
        var h = new X87Harness();
        h.PushDouble(2.0);
        h.Ok(a => a.fldz());
        h.Push(Float80.PositiveInfinity);
        Assert.Equal(5, h.Unit.Top);
        // Physical R5 = inf (special 10), R6 = 0 (zero 01), R7 = 2.0 (valid 00), others empty.
        Assert.Equal(0b00_01_10_11_11_11_11_11, h.Unit.TagWord);
        Assert.Equal(5, (h.Unit.StatusWord >> 11) & 7);
        h.Ok(a => a.fxch(st0, st2));
        Assert.Equal(2.0, h.PopDouble());
        Assert.Equal(0.0, h.PopDouble());
        Assert.True(double.IsPositiveInfinity(h.PopDouble()));
        Assert.Equal(0xFFFF, h.Unit.TagWord);
    }

    [Fact]
    public void StackOverflowPushesIndefiniteWhenMaskedWithC1Set()
    {
        var h = new X87Harness();
        for (int i = 0; i < 8; i++)
        {
            h.Ok(a => a.fld1());
        }
        Assert.Equal(0, h.Status & (X87Status.InvalidOperation | X87Status.StackFault));
        h.Ok(a => a.fldpi());
        Assert.True(h.Flag(X87Status.InvalidOperation) && h.Flag(X87Status.StackFault) && h.Flag(X87Status.C1));
        Assert.Equal(Float80.Indefinite, h.St(0));
        Assert.False(h.Unit.HasPendingUnmaskedException);
    }

    [Fact]
    public void StackUnderflowStoresIndefiniteWhenMaskedWithC1Clear()
    {
        var h = new X87Harness();
        h.Ok(a => a.fadd(st0, st1));
        Assert.True(h.Flag(X87Status.InvalidOperation) && h.Flag(X87Status.StackFault));
        Assert.False(h.Flag(X87Status.C1));
        Assert.Equal(Float80.Indefinite, h.St(0));
        // FSTP m64 of an empty register writes the double indefinite.
        h.Ok(a => a.fninit());
        h.Ok(a => a.fstp(__qword_ptr[eax]));
        Assert.Equal(MemoryFormats.DoubleIndefinite, BinaryPrimitives.ReadUInt64LittleEndian(h.Memory.Bytes));
        h.Ok(a => a.fistp(__word_ptr[eax]));
        Assert.Equal(0x8000, BinaryPrimitives.ReadUInt16LittleEndian(h.Memory.Bytes));
    }

    [Fact]
    public void UnmaskedStackFaultLeavesStackAndMemoryAlone()
    {
        var h = new X87Harness();
        h.SetControl(0x037E);   // IM clear
        h.Memory.Bytes.AsSpan().Fill(0xAA);
        h.Ok(a => a.fstp(__qword_ptr[eax]));
        Assert.Equal(0xAAAAAAAAAAAAAAAAUL, BinaryPrimitives.ReadUInt64LittleEndian(h.Memory.Bytes));
        Assert.Equal(0, h.Unit.Top);
        Assert.True(h.Unit.HasPendingUnmaskedException);
        Assert.True(h.Flag(X87Status.ErrorSummary) && h.Flag(X87Status.Busy));
    }

    [Fact]
    public void ArithmeticFormsUseIntelOperandOrder()
    {
        var h = new X87Harness();
        h.PushDouble(3.0);   // ST1
        h.PushDouble(12.0);  // ST0
        h.Ok(a => a.fsub(st0, st1));                 // ST0 = 12 - 3
        Assert.Equal(9.0, (double)ToDouble(h.St(0)));
        h.Ok(a => a.fsubr(st0, st1));                // ST0 = 3 - 9
        Assert.Equal(-6.0, ToDouble(h.St(0)));
        h.Ok(a => a.fdiv(st1, st0));                 // ST1 = 3 / -6
        Assert.Equal(-0.5, ToDouble(h.St(1)));
        h.Ok(a => a.fdivrp(st1, st0));               // ST1 = ST0 / ST1 = -6 / -0.5, pop
        Assert.Equal(12.0, ToDouble(h.St(0)));
        Assert.Equal(7, h.Unit.Top);
        // DE E8+i is FSUBP ST(i),ST(0): ST(i) - ST(0) in Intel syntax.
        h.PushDouble(5.0);
        Assert.Equal(X87Outcome.Done, h.RunBytes("DEE9"));
        Assert.Equal(7.0, ToDouble(h.St(0)));
        h.Ok(a => a.fmul(st0, st0));
        Assert.Equal(49.0, ToDouble(h.St(0)));
        BinaryPrimitives.WriteInt16LittleEndian(h.Memory.Bytes, -7);
        h.Ok(a => a.fidiv(__word_ptr[eax]));
        Assert.Equal(-7.0, ToDouble(h.St(0)));
        BinaryPrimitives.WriteInt32LittleEndian(h.Memory.Bytes, 100);
        h.Ok(a => a.fisubr(__dword_ptr[eax]));
        Assert.Equal(107.0, ToDouble(h.St(0)));
        h.Ok(a => a.fchs());
        Assert.Equal(-107.0, ToDouble(h.St(0)));
        h.Ok(a => a.fabs());
        Assert.Equal(107.0, ToDouble(h.St(0)));
    }

    private static double ToDouble(Float80 v)
    {
        var env = new X87Arithmetic(X87Control.Default);
        return BitConverter.UInt64BitsToDouble(MemoryFormats.ToDoubleBits(v, ref env));
    }

    [Fact]
    public void ExtendedPrecisionIsKeptAt64Bits()
    {
        // 1 + 2^-63 is exact in extended precision but not in double.
        var h = new X87Harness();
        h.Ok(a => a.fld1());
        h.Push(new Float80(Float80.ExponentBias - 63, Float80.IntegerBit));
        h.Ok(a => a.faddp(st1, st0));
        Assert.Equal(new Float80(Float80.ExponentBias, Float80.IntegerBit | 1), h.St(0));
        Assert.False(h.Flag(X87Status.Precision));
        // Stored as double it rounds to 1.0 with PE, C1 clear (rounded down).
        Assert.Equal(1.0, h.PopDouble());
        Assert.True(h.Flag(X87Status.Precision));
        Assert.False(h.Flag(X87Status.C1));
    }

    [Fact]
    public void HandComputedExtendedResults()
    {
        var env = new X87Arithmetic(X87Control.Default);
        // 1/3 = 0.AAAA...: significand AAAAAAAAAAAAAAAB after round-to-nearest (next bit 1, then 0101...).
        Float80 third = ExtendedArithmetic.Divide(Float80.One, Float80.FromDouble(3), ref env);
        Assert.Equal(new Float80(0x3FFD, 0xAAAA_AAAA_AAAA_AAABUL), third);
        Assert.True(env.RoundedUp);
        // Toward zero gives ...AAAA.
        env = new X87Arithmetic(X87Harness.ControlWord(64, X87Rounding.TowardZero));
        Assert.Equal(new Float80(0x3FFD, 0xAAAA_AAAA_AAAA_AAAAUL), ExtendedArithmetic.Divide(Float80.One, Float80.FromDouble(3), ref env));
        // sqrt(2) = 1.6A09E667F3BCC908 B2F... -> nearest B2 rounds ...C909 (next bits 1011...).
        env = new X87Arithmetic(X87Control.Default);
        Assert.Equal(new Float80(0x3FFF, 0xB504_F333_F9DE_6484UL), ExtendedArithmetic.SquareRoot(Float80.FromDouble(2), ref env));
        // (2^64 - 1) * (2^64 - 1) = 2^128 - 2^65 + 1: rounds to nearest 0xFFFFFFFFFFFFFFFE * 2^64.
        var max = new Float80(Float80.ExponentBias + 63, ulong.MaxValue);
        env = new X87Arithmetic(X87Control.Default);
        Assert.Equal(new Float80(Float80.ExponentBias + 127, 0xFFFF_FFFF_FFFF_FFFEUL), ExtendedArithmetic.Multiply(max, max, ref env));
        Assert.True((env.Flags & X87Status.Precision) != 0);
    }

    [Fact]
    public void PrecisionControlRoundsRegisterResults()
    {
        var h = new X87Harness();
        h.SetControl(X87Harness.ControlWord(24, X87Rounding.NearestEven));
        h.Ok(a => a.fld1());
        h.PushDouble(3.0);
        h.Ok(a => a.fdivp(st1, st0));
        Assert.Equal(1.0f / 3.0f, (float)ToDouble(h.St(0)));
        Assert.Equal(0UL, h.St(0).Significand & 0xFF_FFFF_FFFFUL);
        // Loads are not affected by precision control.
        h.PushDouble(0.1);
        Assert.Equal(0.1, ToDouble(h.St(0)));
    }

    [Fact]
    public void DeferredFloatingPointErrorIsSignalledByTheNextWaitingInstruction()
    {
        var h = new X87Harness();
        h.SetControl(0x037B);   // unmask ZE
        h.Ok(a => a.fld1());
        h.Ok(a => a.fldz());
        Assert.Equal(X87Outcome.Done, h.Run(a => a.fdivp(st1, st0)));     // 1 / 0: exception recorded, not signalled
        Assert.True(h.Flag(X87Status.ZeroDivide) && h.Flag(X87Status.ErrorSummary));
        Assert.True(h.Unit.HasPendingUnmaskedException);
        // Unmasked ZE: destination and TOP unchanged.
        Assert.Equal(6, h.Unit.Top);
        Assert.Equal(Float80.One, h.St(1));
        int top = h.Unit.Top;
        Assert.Equal(X87Outcome.FloatingPointError, h.Run(a => a.fld1()));
        Assert.Equal(X87Outcome.FloatingPointError, h.Run(a => a.wait()));
        Assert.Equal(top, h.Unit.Top);
        // Non-waiting forms still run.
        Assert.Equal(X87Outcome.Done, h.Run(a => a.fnstsw(ax)));
        Assert.True(h.Context.AxWritten);
        Assert.Equal(h.Unit.StatusWord, h.Context.Ax);
        Assert.Equal(X87Outcome.Done, h.Run(a => a.fnstcw(__word_ptr[eax])));
        Assert.Equal(X87Outcome.Done, h.Run(a => a.fnclex()));
        Assert.False(h.Unit.HasPendingUnmaskedException);
        Assert.Equal(X87Outcome.Done, h.Run(a => a.fld1()));
    }

    [Fact]
    public void FldcwUnmaskingASetFlagMakesItPending()
    {
        var h = new X87Harness();
        h.Ok(a => a.fld1());
        h.Ok(a => a.fldz());
        h.Ok(a => a.fdiv(st1, st0));              // masked: ST1 = +inf, ZE set, no ES
        Assert.True(h.St(1).IsInfinity);
        Assert.False(h.Unit.HasPendingUnmaskedException);
        h.SetControl(0x037B);
        Assert.True(h.Unit.HasPendingUnmaskedException);
        Assert.Equal(X87Outcome.FloatingPointError, h.Run(a => a.fnop()));
    }

    [Fact]
    public void WaitingFinitChecksButFninitDoesNot()
    {
        var h = new X87Harness();
        h.SetControl(0x037E);
        h.Ok(a => a.fadd(st0, st1));        // underflow, unmasked
        Assert.Equal(X87Outcome.FloatingPointError, h.Run(a => a.finit()));   // Iced emits WAIT then FNINIT
        Assert.Equal(X87Outcome.Done, h.Run(a => a.fninit()));
        Assert.False(h.Unit.HasPendingUnmaskedException);
    }

    [Fact]
    public void MaskedResponsesForOverflowUnderflowAndInvalid()
    {
        var env = new X87Arithmetic(X87Control.Default);
        var huge = new Float80(0x7FFE, Float80.IntegerBit);
        Assert.Equal(Float80.PositiveInfinity, ExtendedArithmetic.Multiply(huge, huge, ref env));
        Assert.Equal(X87Status.Overflow | X87Status.Precision, env.Flags);
        // Round toward zero overflows to the largest finite value.
        env = new X87Arithmetic(X87Harness.ControlWord(64, X87Rounding.TowardZero));
        Assert.Equal(new Float80(0x7FFE, ulong.MaxValue), ExtendedArithmetic.Multiply(huge, huge, ref env));
        // Round down: positive overflow gives max finite, negative gives -inf.
        env = new X87Arithmetic(X87Harness.ControlWord(64, X87Rounding.Down));
        Assert.Equal(Float80.NegativeInfinity, ExtendedArithmetic.Multiply(huge, huge.Negate(), ref env));
        // Tiny exact result: denormal, no flags.
        env = new X87Arithmetic(X87Control.Default);
        var tiny = new Float80(1, Float80.IntegerBit);                       // smallest normal 2^-16382
        Float80 half = ExtendedArithmetic.Multiply(tiny, Float80.FromDouble(0.5), ref env);
        Assert.Equal(new Float80(0, 1UL << 62), half);
        Assert.Equal(0, env.Flags);
        // Tiny inexact: UE and PE.
        env = new X87Arithmetic(X87Control.Default);
        ExtendedArithmetic.Multiply(new Float80(1, ulong.MaxValue), Float80.FromDouble(0.5), ref env);
        Assert.Equal(X87Status.Underflow | X87Status.Precision, env.Flags);
        // inf - inf, 0 * inf, 0/0, sqrt(-1): IE and the real indefinite.
        env = new X87Arithmetic(X87Control.Default);
        Assert.Equal(Float80.Indefinite, ExtendedArithmetic.Subtract(Float80.PositiveInfinity, Float80.PositiveInfinity, ref env));
        Assert.Equal(Float80.Indefinite, ExtendedArithmetic.Multiply(Float80.PositiveZero, Float80.PositiveInfinity, ref env));
        Assert.Equal(Float80.Indefinite, ExtendedArithmetic.Divide(Float80.PositiveZero, Float80.NegativeZero, ref env));
        Assert.Equal(Float80.Indefinite, ExtendedArithmetic.SquareRoot(Float80.One.Negate(), ref env));
        Assert.Equal(X87Status.InvalidOperation, env.Flags);
        Assert.Equal(Float80.NegativeZero, ExtendedArithmetic.SquareRoot(Float80.NegativeZero, ref env));
    }

    [Fact]
    public void UnmaskedOverflowAndUnderflowBiasTheExponentForRegisterResults()
    {
        var h = new X87Harness();
        h.SetControl(0x0377);   // OE unmasked
        var huge = new Float80(0x7FFE, Float80.IntegerBit);
        h.Push(huge);
        h.Push(huge);
        h.Ok(a => a.fmulp(st1, st0));
        // 2^16383 * 2^16383 = 2^32766; biased by -24576 -> exponent field 32766 + 16383 - 24576.
        Assert.Equal(new Float80(0x7FFE + 0x7FFE - Float80.ExponentBias - 0x6000, Float80.IntegerBit), h.St(0));
        Assert.True(h.Flag(X87Status.Overflow) && h.Unit.HasPendingUnmaskedException);

        h = new X87Harness();
        h.SetControl(0x036F);   // UE unmasked
        var tiny = new Float80(1, Float80.IntegerBit);
        h.Push(tiny);
        h.Push(tiny);
        h.Ok(a => a.fmulp(st1, st0));
        Assert.Equal(new Float80(1 + 1 - Float80.ExponentBias + 0x6000, Float80.IntegerBit), h.St(0));
        Assert.True(h.Flag(X87Status.Underflow));
        Assert.False(h.Flag(X87Status.Precision));
    }

    [Fact]
    public void StoreWithUnmaskedOverflowStoresNothing()
    {
        var h = new X87Harness();
        h.SetControl(0x0377);
        h.PushDouble(1e300);
        h.PushDouble(1e300);
        h.Ok(a => a.fmulp(st1, st0));       // 1e600 is fine in extended
        h.Memory.Bytes.AsSpan().Fill(0x55);
        h.Ok(a => a.fstp(__qword_ptr[eax]));
        Assert.Equal(0x5555555555555555UL, BinaryPrimitives.ReadUInt64LittleEndian(h.Memory.Bytes));
        Assert.True(h.Flag(X87Status.Overflow));
        Assert.False(h.Unit.IsStackEmpty(0));     // not popped
        // Masked: +inf stored with OE and PE.
        h.Ok(a => a.fnclex());
        h.SetControl(0x037F);
        Assert.True(double.IsPositiveInfinity(h.PopDouble()));
        Assert.True(h.Flag(X87Status.Overflow) && h.Flag(X87Status.Precision));
    }

    [Fact]
    public void DenormalOperandsRaiseDeAndUnmaskedDeSuppressesTheResult()
    {
        var h = new X87Harness();
        h.PushDouble(double.Epsilon);              // FLD m64 of a denormal: DE
        Assert.True(h.Flag(X87Status.DenormalOperand));
        Assert.Equal(Float80.FromDouble(double.Epsilon), h.St(0));
        h.Ok(a => a.fadd(st0, st0));
        Assert.Equal(2 * double.Epsilon, ToDouble(h.St(0)));
        h.Ok(a => a.fninit());
        h.SetControl(0x037D);                      // DE unmasked
        h.PushDouble(1.0);
        h.Push(new Float80(0, 1));                 // extended denormal: FLD m80 raises nothing
        Assert.False(h.Flag(X87Status.DenormalOperand));
        h.Ok(a => a.faddp(st1, st0));
        Assert.True(h.Flag(X87Status.DenormalOperand) && h.Unit.HasPendingUnmaskedException);
        Assert.Equal(6, h.Unit.Top);               // nothing popped
        Assert.Equal(Float80.One, h.St(1));
    }

    [Fact]
    public void SignalingNaNsRaiseInvalidAndAreQuieted()
    {
        var h = new X87Harness();
        BinaryPrimitives.WriteUInt64LittleEndian(h.Memory.Bytes, 0x7FF0_0000_0000_0001UL);   // SNaN
        h.Ok(a => a.fld(__qword_ptr[eax]));
        Assert.True(h.Flag(X87Status.InvalidOperation));
        Assert.Equal(Float80Class.QuietNaN, h.St(0).Class);
        h.Ok(a => a.fnclex());
        // Two QNaNs: the larger significand wins; QNaN + number gives the QNaN.
        var small = new Float80(0x7FFF, 0xC000_0000_0000_0001UL);
        var large = new Float80(0xFFFF, 0xC000_0000_0000_0100UL);
        var env = new X87Arithmetic(X87Control.Default);
        Assert.Equal(large, ExtendedArithmetic.Add(small, large, ref env));
        Assert.Equal(large, ExtendedArithmetic.Add(large, small, ref env));
        Assert.Equal(small, ExtendedArithmetic.Multiply(small, Float80.One, ref env));
        Assert.Equal(0, env.Flags);
        // SNaN and QNaN: the QNaN, with IE.
        var snan = new Float80(0x7FFF, 0x8000_0000_0000_FFFFUL);
        Assert.Equal(small, ExtendedArithmetic.Add(snan, small, ref env));
        Assert.Equal(X87Status.InvalidOperation, env.Flags);
        // Unsupported encodings (unnormal) are invalid.
        env = new X87Arithmetic(X87Control.Default);
        Assert.Equal(Float80.Indefinite, ExtendedArithmetic.Add(new Float80(0x4000, 0x4000_0000_0000_0000UL), Float80.One, ref env));
        Assert.Equal(X87Status.InvalidOperation, env.Flags);
    }

    [Theory]
    [InlineData(2.0, 1.0, "000")]
    [InlineData(1.0, 2.0, "001")]
    [InlineData(-0.0, 0.0, "100")]
    [InlineData(double.NaN, 1.0, "111")]
    public void FcomAndFucomConditionCodes(double top, double second, string codes)
    {
        var h = new X87Harness();
        h.PushDouble(second);
        h.PushDouble(top);
        h.Ok(a => a.fucom(st0, st1));
        Assert.Equal(codes, h.Codes);
        Assert.False(h.Flag(X87Status.InvalidOperation));         // QNaN is quiet for FUCOM
        h.Ok(a => a.fcom(st0, st1));
        Assert.Equal(codes, h.Codes);
        Assert.Equal(double.IsNaN(top), h.Flag(X87Status.InvalidOperation));   // but not for FCOM
        h.Ok(a => a.fcompp());
        Assert.Equal(0, h.Unit.Top);
        Assert.True(h.Unit.IsStackEmpty(0));
    }

    [Fact]
    public void FcomMemoryFicomAndFtst()
    {
        var h = new X87Harness();
        h.PushDouble(-2.5);
        BinaryPrimitives.WriteUInt32LittleEndian(h.Memory.Bytes, BitConverter.SingleToUInt32Bits(-2.5f));
        h.Ok(a => a.fcom(__dword_ptr[eax]));
        Assert.Equal("100", h.Codes);
        BinaryPrimitives.WriteInt16LittleEndian(h.Memory.Bytes, -3);
        h.Ok(a => a.ficom(__word_ptr[eax]));
        Assert.Equal("000", h.Codes);
        h.Ok(a => a.ftst());
        Assert.Equal("001", h.Codes);
        BinaryPrimitives.WriteInt32LittleEndian(h.Memory.Bytes, -2);
        h.Ok(a => a.ficomp(__dword_ptr[eax]));
        Assert.Equal("001", h.Codes);
        Assert.True(h.Unit.IsStackEmpty(0));
    }

    [Theory]
    [InlineData(2.0, 1.0, 0u)]
    [InlineData(1.0, 2.0, 0x01u)]
    [InlineData(1.0, 1.0, 0x40u)]
    [InlineData(double.NaN, 1.0, 0x45u)]
    public void FcomiSetsZfPfCfAndClearsOfSfAf(double top, double second, uint flags)
    {
        var h = new X87Harness();
        h.PushDouble(second);
        h.PushDouble(top);
        h.Context.Eflags = 0x2 | 0x800 | 0x80 | 0x10 | 0x45;
        h.Ok(a => a.fucomi(st0, st1));
        Assert.Equal(0x2 | flags, h.Context.Eflags);
        Assert.False(h.Flag(X87Status.InvalidOperation));
        h.Ok(a => a.fcomip(st0, st1));
        Assert.Equal(0x2 | flags, h.Context.Eflags);
        Assert.Equal(double.IsNaN(top), h.Flag(X87Status.InvalidOperation));
        Assert.Equal(7, h.Unit.Top);
    }

    [Fact]
    public void FcmovFollowsEflags()
    {
        var h = new X87Harness();
        h.PushDouble(7.0);
        h.PushDouble(1.0);
        h.Context.Eflags = 0x01;                  // CF
        h.Ok(a => a.fcmovnb(st0, st1));
        Assert.Equal(1.0, ToDouble(h.St(0)));
        h.Ok(a => a.fcmovb(st0, st1));
        Assert.Equal(7.0, ToDouble(h.St(0)));
        h.Ok(a => a.fld1());
        h.Context.Eflags = 0x44;                  // ZF, PF
        h.Ok(a => a.fcmovu(st0, st1));
        Assert.Equal(7.0, ToDouble(h.St(0)));
    }

    [Fact]
    public void FxamClassifiesEveryClass()
    {
        var h = new X87Harness();
        h.Ok(a => a.fxam());
        Assert.Equal("101", h.Codes);                              // empty
        (Float80 value, string codes)[] cases =
        [
            (Float80.One.Negate(), "010"),
            (Float80.NegativeZero, "100"),
            (Float80.PositiveInfinity, "011"),
            (Float80.Indefinite, "001"),
            (new Float80(0, 5), "110"),                              // denormal
            (new Float80(0x4000, 0x4000_0000_0000_0000UL), "000"),   // unnormal: unsupported
        ];
        foreach (var (value, codes) in cases)
        {
            h.Push(value);
            h.Ok(a => a.fxam());
            Assert.Equal(codes, h.Codes);
            Assert.Equal(value.IsNegative, h.Flag(X87Status.C1));
        }
    }

    [Theory]
    [InlineData(X87Rounding.NearestEven, 0xC90F_DAA2_2168_C235UL, 0xB8AA_3B29_5C17_F0BCUL, 0xD49A_784B_CD1B_8AFEUL)]
    [InlineData(X87Rounding.Down, 0xC90F_DAA2_2168_C234UL, 0xB8AA_3B29_5C17_F0BBUL, 0xD49A_784B_CD1B_8AFEUL)]
    [InlineData(X87Rounding.Up, 0xC90F_DAA2_2168_C235UL, 0xB8AA_3B29_5C17_F0BCUL, 0xD49A_784B_CD1B_8AFFUL)]
    [InlineData(X87Rounding.TowardZero, 0xC90F_DAA2_2168_C234UL, 0xB8AA_3B29_5C17_F0BBUL, 0xD49A_784B_CD1B_8AFEUL)]
    public void ConstantsAreRoundedUnderRoundingControl(X87Rounding rc, ulong pi, ulong l2e, ulong l2t)
    {
        var h = new X87Harness();
        h.SetControl(X87Harness.ControlWord(64, rc));
        h.Ok(a => a.fldpi());
        h.Ok(a => a.fldl2e());
        h.Ok(a => a.fldl2t());
        Assert.Equal(new Float80(0x4000, pi), h.St(2));
        Assert.Equal(new Float80(0x3FFF, l2e), h.St(1));
        Assert.Equal(new Float80(0x4000, l2t), h.St(0));
        h.Ok(a => a.fldlg2());
        Assert.Equal(Math.Log10(2), ToDouble(h.St(0)));
        h.Ok(a => a.fldln2());
        Assert.Equal(Math.Log(2), ToDouble(h.St(0)));
        h.Ok(a => a.fld1());
        h.Ok(a => a.fldz());
        Assert.Equal(Float80.PositiveZero, h.St(0));
        Assert.Equal(Float80.One, h.St(1));
    }

    [Fact]
    public void IntegerLoadsAndStoresInEverySize()
    {
        var h = new X87Harness();
        BinaryPrimitives.WriteInt64LittleEndian(h.Memory.Bytes, long.MinValue);
        h.Ok(a => a.fild(__qword_ptr[eax]));
        Assert.Equal(new Float80(0xC000 + 62, Float80.IntegerBit), h.St(0));
        h.Ok(a => a.fistp(__qword_ptr[eax]));
        Assert.Equal(long.MinValue, BinaryPrimitives.ReadInt64LittleEndian(h.Memory.Bytes));
        Assert.False(h.Flag(X87Status.InvalidOperation));

        h.PushDouble(2.5);
        h.Ok(a => a.fist(__dword_ptr[eax]));
        Assert.Equal(2, BinaryPrimitives.ReadInt32LittleEndian(h.Memory.Bytes));     // ties to even
        Assert.True(h.Flag(X87Status.Precision));
        Assert.False(h.Flag(X87Status.C1));
        h.SetControl(X87Harness.ControlWord(64, X87Rounding.Up));
        h.Ok(a => a.fist(__word_ptr[eax]));
        Assert.Equal(3, BinaryPrimitives.ReadInt16LittleEndian(h.Memory.Bytes));
        Assert.True(h.Flag(X87Status.C1));
        h.Ok(a => a.fisttp(__word_ptr[eax]));                                        // truncates regardless of RC
        Assert.Equal(2, BinaryPrimitives.ReadInt16LittleEndian(h.Memory.Bytes));

        h.PushDouble(40000);
        h.Ok(a => a.fistp(__word_ptr[eax]));
        Assert.Equal(0x8000, BinaryPrimitives.ReadUInt16LittleEndian(h.Memory.Bytes));   // integer indefinite
        Assert.True(h.Flag(X87Status.InvalidOperation));
    }

    [Fact]
    public void PackedBcdLoadAndStore()
    {
        var h = new X87Harness();
        byte[] bcd = [0x89, 0x67, 0x45, 0x23, 0x01, 0x89, 0x67, 0x45, 0x23, 0x80];   // -234567890123456789
        bcd.CopyTo(h.Memory.Bytes, 0);
        h.Ok(a => a.fbld(__tword_ptr[eax]));
        Assert.Equal(-234567890123456789L, (long)ToInteger(h.St(0)));
        h.Memory.Bytes.AsSpan(0, 10).Clear();
        h.Ok(a => a.fbstp(__tword_ptr[eax]));
        Assert.Equal(bcd, h.Memory.Bytes.AsSpan(0, 10).ToArray());
        h.PushDouble(1e19);
        h.Ok(a => a.fbstp(__tword_ptr[eax]));
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF }, h.Memory.Bytes.AsSpan(0, 10).ToArray());
        Assert.True(h.Flag(X87Status.InvalidOperation));
        h.PushDouble(-41.5);
        h.Ok(a => a.fbstp(__tword_ptr[eax]));
        Assert.Equal(new byte[] { 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0x80 }, h.Memory.Bytes.AsSpan(0, 10).ToArray());
    }

    private static long ToInteger(Float80 v)
    {
        var env = new X87Arithmetic(X87Control.Default);
        Assert.True(ExtendedArithmetic.TryConvertToInteger(v, 64, ref env, out long r));
        return r;
    }

    [Fact]
    public void SingleAndExtendedStoresRound()
    {
        var h = new X87Harness();
        h.PushDouble(0.1);
        Assert.Equal(0.1f, h.PopSingle());
        Assert.True(h.Flag(X87Status.Precision));
        h.Push(Pi);
        h.Ok(a => a.fstp(__tword_ptr[eax]));
        Assert.Equal(Pi, Float80.Read(h.Memory.Bytes));
        // A single-precision denormal result.
        h.PushDouble(1e-40);
        Assert.Equal(1e-40f, h.PopSingle());
        Assert.True(h.Flag(X87Status.Underflow));
    }

    [Fact]
    public void MemoryFaultsLeaveStateUnchanged()
    {
        var h = new X87Harness();
        h.PushDouble(1.25);
        ushort status = h.Unit.StatusWord;
        h.Memory.FailWrites = true;
        Assert.Equal(X87Outcome.MemoryFault, h.Run(a => a.fstp(__qword_ptr[eax])));
        Assert.Equal(X87Outcome.MemoryFault, h.Run(a => a.fnsave(__[eax])));
        Assert.Equal(X87Outcome.MemoryFault, h.Run(a => a.fistp(__dword_ptr[eax])));
        Assert.Equal(status, h.Unit.StatusWord);
        Assert.Equal(1.25, ToDouble(h.St(0)));
        Assert.Equal(7, h.Unit.Top);
        h.Memory.FailWrites = false;
        h.Memory.FailReads = true;
        Assert.Equal(X87Outcome.MemoryFault, h.Run(a => a.fadd(__qword_ptr[eax])));
        Assert.Equal(X87Outcome.MemoryFault, h.Run(a => a.fld(__tword_ptr[eax])));
        Assert.Equal(X87Outcome.MemoryFault, h.Run(a => a.frstor(__[eax])));
        Assert.Equal(X87Outcome.MemoryFault, h.Run(a => a.fldcw(__word_ptr[eax])));
        Assert.Equal(status, h.Unit.StatusWord);
        Assert.Equal(0x037F, h.Unit.ControlWord);
        Assert.Equal(1.25, ToDouble(h.St(0)));
        Assert.Equal(0x1000u, h.Unit.InstructionOffset);
    }

    [Fact]
    public void PointersAndOpcodeAreRecordedByNonControlInstructions()
    {
        var h = new X87Harness();
        h.Context.Eip = 0x1234;
        h.Context.DataOffset = 0x5678;
        h.Context.DataSelector = 0x2B;
        Assert.Equal(X87Outcome.Done, h.RunBytes("DD4424F8"));    // fld qword [esp-8]
        Assert.Equal(0x1234u, h.Unit.InstructionOffset);
        Assert.Equal(0x08, h.Unit.InstructionSelector);
        Assert.Equal(0x5678u, h.Unit.DataOffset);
        Assert.Equal(0x2B, h.Unit.DataSelector);
        Assert.Equal(0x544, h.Unit.LastOpcode);                    // (DD & 7) << 8 | 44
        h.Context.Eip = 0x2000;
        Assert.Equal(X87Outcome.Done, h.RunBytes("DEC1"));         // faddp st1, st0 (underflow, masked)
        Assert.Equal(0x6C1, h.Unit.LastOpcode);
        Assert.Equal(0x5678u, h.Unit.DataOffset);                  // no memory operand: unchanged
        h.Context.Eip = 0x3000;
        Assert.Equal(X87Outcome.Done, h.RunBytes("D93D00010000")); // fnstcw [100h]: control, not recorded
        Assert.Equal(0x2000u, h.Unit.InstructionOffset);
        Assert.Equal(X87Outcome.Done, h.RunBytes("DB2B"));         // fld tbyte [ebx]
        Assert.Equal(0x32B, h.Unit.LastOpcode);
        Assert.Equal(X87Outcome.Done, h.RunBytes("D9E1"));         // fabs
        Assert.Equal(0x1E1, h.Unit.LastOpcode);
        // 16-bit addressing: fld qword [bx], fld qword [bp+si+4], fld qword [1234h].
        Assert.Equal(X87Outcome.Done, h.RunBytes("67DD07"));
        Assert.Equal(0x507, h.Unit.LastOpcode);
        Assert.Equal(X87Outcome.Done, h.RunBytes("67DD4204"));
        Assert.Equal(0x542, h.Unit.LastOpcode);
        Assert.Equal(X87Outcome.Done, h.RunBytes("67DD063412"));
        Assert.Equal(0x506, h.Unit.LastOpcode);
        // 32-bit absolute and SIB without base: fld dword [12345678h], fstp dword [esi*4+8].
        Assert.Equal(X87Outcome.Done, h.RunBytes("D90578563412"));
        Assert.Equal(0x105, h.Unit.LastOpcode);
        Assert.Equal(X87Outcome.Done, h.RunBytes("D91CB508000000"));
        Assert.Equal(0x11C, h.Unit.LastOpcode);
    }

    [Fact]
    public void ProtectedModeEnvironmentLayout32()
    {
        var h = new X87Harness();
        h.Context.Eip = 0x00401000;
        h.Context.Cs = 0x1B;
        h.Context.DataOffset = 0x00802000;
        h.Context.DataSelector = 0x23;
        h.PushDouble(1.0);                                          // records pointers, FOP of fld m64 [eax] = 0x500
        h.Ok(a => a.fnstenv(__[eax]));
        byte[] m = h.Memory.Bytes;
        Assert.Equal(0xFFFF037Fu, BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(0)));
        Assert.Equal(0x3800, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(4)));    // TOP = 7
        Assert.Equal(0x3FFF, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(8)));    // R7 valid, others empty
        Assert.Equal(0x00401000u, BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(12)));
        Assert.Equal(0x1B, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(16)));
        Assert.Equal(0x500, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(18)));
        Assert.Equal(0x00802000u, BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(20)));
        Assert.Equal(0x23, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(24)));
        Assert.Equal(0x037F, h.Unit.ControlWord);                   // masks were already all set
        // FLDENV restores it after FNINIT.
        h.Ok(a => a.fninit());
        h.Ok(a => a.fldenv(__[eax]));
        Assert.Equal(7, h.Unit.Top);
        Assert.Equal(0x00401000u, h.Unit.InstructionOffset);
        Assert.Equal(0x500, h.Unit.LastOpcode);
        Assert.False(h.Unit.IsStackEmpty(0));
    }

    [Fact]
    public void RealModeEnvironmentLayouts()
    {
        var h = new X87Harness();
        h.Context.RealMode = true;
        h.Context.OperandSize32 = false;
        h.Context.Cs = 0xF123;
        h.Context.Eip = 0x4567;                                     // linear 0xF5797
        h.Context.DataSelector = 0x1234;
        h.Context.DataOffset = 0xFFFF;                              // linear 0x2233F
        h.PushDouble(1.0);
        h.Ok(a => a.fnstenv(__[eax]));
        byte[] m = h.Memory.Bytes;
        Assert.Equal(0x037F, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(0)));
        Assert.Equal(0x5797, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(6)));
        Assert.Equal(0xF000 | 0x500, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(8)));
        Assert.Equal(0x233F, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(10)));
        Assert.Equal(0x2000, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(12)));

        h.Context.OperandSize32 = true;
        h.Ok(a => a.fnstenv(__[eax]));
        Assert.Equal(0x5797, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(12)));
        Assert.Equal((0xFu << 12) | 0x500, BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(16)));
        Assert.Equal(0x233F, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(20)));
        Assert.Equal(0x2u << 12, BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(24)));
        h.Ok(a => a.fninit());
        h.Ok(a => a.fldenv(__[eax]));
        Assert.Equal(0xF5797u, h.Unit.InstructionOffset);
        Assert.Equal(0x2233Fu, h.Unit.DataOffset);
    }

    [Fact]
    public void FnstenvMasksAllExceptions()
    {
        var h = new X87Harness();
        h.SetControl(0x0360);
        h.Ok(a => a.fnstenv(__[eax]));
        Assert.Equal(0x0360, BinaryPrimitives.ReadUInt16LittleEndian(h.Memory.Bytes));
        Assert.Equal(0x037F, h.Unit.ControlWord);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public void FnsaveFrstorRoundTrip(bool operandSize32, bool realMode)
    {
        var h = new X87Harness();
        h.Context.OperandSize32 = operandSize32;
        h.Context.RealMode = realMode;
        h.Context.Cs = 0x10;
        h.Context.Eip = 0x3456;
        h.SetControl(X87Harness.ControlWord(53, X87Rounding.Up, unmask: X87Status.Precision));
        h.PushDouble(3.0);
        h.Ok(a => a.fldpi());
        h.Ok(a => a.fldz());
        h.Push(new Float80(0, 3));
        h.PushDouble(1.0);
        h.PushDouble(3.0);
        h.Ok(a => a.fdivp(st1, st0));          // inexact with PE unmasked: pending
        Assert.True(h.Unit.HasPendingUnmaskedException);
        // The 16-bit protected-mode layout has no opcode field (SDM vol.1 figure 8-11).
        bool keepsOpcode = operandSize32 || realMode;
        var before = Snapshot(h.Unit, keepsOpcode);
        h.Ok(a => a.fnsave(__[eax]));
        Assert.Equal(X87Unit.SaveSize(operandSize32), 14 + (operandSize32 ? 14 : 0) + 80);
        Assert.Equal(0xFFFF, h.Unit.TagWord);                       // FNSAVE re-initialises
        Assert.False(h.Unit.HasPendingUnmaskedException);
        h.Ok(a => a.fld1());
        h.Ok(a => a.frstor(__[eax]));
        Assert.Equal(before, Snapshot(h.Unit, keepsOpcode));
        Assert.True(h.Unit.HasPendingUnmaskedException);
    }

    private static string Snapshot(X87Unit u, bool withOpcode = true)
    {
        var parts = new List<string> { $"{u.ControlWord:X4} {u.StatusWord:X4} {u.TagWord:X4} {(withOpcode ? u.LastOpcode : 0):X3}" };
        for (int i = 0; i < 8; i++)
        {
            parts.Add(u.IsStackEmpty(i) ? "empty" : u.ReadStack(i).ToString());
        }
        return string.Join(",", parts);
    }

    [Fact]
    public void FxsaveImageRoundTripAndLayout()
    {
        var h = new X87Harness();
        h.PushDouble(-2.0);
        h.Ok(a => a.fldz());
        h.Ok(a => a.fldpi());
        var before = Snapshot(h.Unit);
        byte[] image = new byte[512];
        image.AsSpan().Fill(0xEE);
        h.Unit.SaveFxsaveImage(image);
        Assert.Equal(0x037F, BinaryPrimitives.ReadUInt16LittleEndian(image));
        Assert.Equal(0b1110_0000, image[4]);                        // abridged tag: R5..R7 valid
        Assert.Equal(Pi, Float80.Read(image.AsSpan(32)));
        Assert.Equal(Float80.PositiveZero, Float80.Read(image.AsSpan(48)));
        Assert.Equal(0, image[32 + 10]);                            // reserved bytes zeroed
        Assert.Equal(0xEE, image[24]);                              // MXCSR untouched
        h.Unit.Reset();
        h.Unit.LoadFxsaveImage(image);
        Assert.Equal(before, Snapshot(h.Unit));
    }

    [Fact]
    public void FreeIncrementDecrementAndNop()
    {
        var h = new X87Harness();
        h.Ok(a => a.fld1());
        h.Ok(a => a.fldz());
        h.Ok(a => a.ffree(st1));
        Assert.True(h.Unit.IsStackEmpty(1));
        h.Ok(a => a.fincstp());
        Assert.Equal(7, h.Unit.Top);
        Assert.True(h.Unit.IsStackEmpty(0));
        h.Ok(a => a.fdecstp());
        Assert.Equal(6, h.Unit.Top);
        Assert.False(h.Unit.IsStackEmpty(0));
        Assert.Equal(X87Outcome.Done, h.RunBytes("DFC0"));            // ffreep st0
        Assert.Equal(7, h.Unit.Top);
        h.Ok(a => a.fnop());
        Assert.Equal(0xFFFF, h.Unit.TagWord);
    }

    [Fact]
    public void ScaleExtractAndRoundToIntegral()
    {
        var h = new X87Harness();
        h.PushDouble(-3.7);
        h.PushDouble(5.0);
        h.Ok(a => a.fscale());                                       // 5 * 2^-3
        Assert.Equal(0.625, ToDouble(h.St(0)));
        h.Ok(a => a.fxtract());
        Assert.Equal(1.25, ToDouble(h.St(0)));
        Assert.Equal(-1.0, ToDouble(h.St(1)));
        h.Ok(a => a.fldz());
        h.Ok(a => a.fxtract());
        Assert.True(h.Flag(X87Status.ZeroDivide));
        Assert.Equal(Float80.PositiveZero, h.St(0));
        Assert.Equal(Float80.NegativeInfinity, h.St(1));
        h.Ok(a => a.fninit());
        h.PushDouble(-2.5);
        h.Ok(a => a.frndint());
        Assert.Equal(-2.0, ToDouble(h.St(0)));
        Assert.True(h.Flag(X87Status.Precision));
    }

    [Fact]
    public void PartialRemainderReportsQuotientBitsAndIncompleteReduction()
    {
        var h = new X87Harness();
        h.PushDouble(3.0);
        h.PushDouble(20.0);
        h.Ok(a => a.fprem());                                        // 20 = 6*3 + 2: Q = 110b
        Assert.Equal(2.0, ToDouble(h.St(0)));
        Assert.True(h.Flag(X87Status.C0));                           // Q2
        Assert.True(h.Flag(X87Status.C3));                           // Q1
        Assert.False(h.Flag(X87Status.C1));                          // Q0
        Assert.False(h.Flag(X87Status.C2));
        h.Ok(a => a.fninit());
        h.PushDouble(3.0);
        h.PushDouble(20.0);
        h.Ok(a => a.fprem1());                                       // 20 = 7*3 - 1: Q = 111b
        Assert.Equal(-1.0, ToDouble(h.St(0)));
        Assert.True(h.Flag(X87Status.C0) && h.Flag(X87Status.C3) && h.Flag(X87Status.C1));
        h.Ok(a => a.fninit());
        h.PushDouble(1.0);
        h.PushDouble(1e30);
        h.Ok(a => a.fprem());
        Assert.True(h.Flag(X87Status.C2));                           // exponent difference >= 64
        int rounds = 1;
        while (h.Flag(X87Status.C2))
        {
            h.Ok(a => a.fprem());
            rounds++;
        }
        Assert.Equal(1e30 % 1.0, ToDouble(h.St(0)));
        Assert.True(rounds is > 1 and < 5);
    }

    [Fact]
    public void TranscendentalsAreAccurateToDoublePrecision()
    {
        var h = new X87Harness();
        foreach (double x in new[] { 0.5, -1.25, 3.0, 100.0, 1e-5 })
        {
            h.Unit.Reset();
            h.PushDouble(x);
            h.Ok(a => a.fsin());
            AssertClose(Math.Sin(x), ToDouble(h.St(0)));
            h.PushDouble(x);
            h.Ok(a => a.fsincos());
            AssertClose(Math.Cos(x), ToDouble(h.St(0)));
            AssertClose(Math.Sin(x), ToDouble(h.St(1)));
            h.PushDouble(x);
            h.Ok(a => a.fptan());
            Assert.Equal(Float80.One, h.St(0));
            AssertClose(Math.Tan(x), ToDouble(h.St(1)));
            Assert.True(h.Flag(X87Status.Precision));
        }
        h.Unit.Reset();
        h.PushDouble(-0.75);
        h.Ok(a => a.f2xm1());
        AssertClose(Math.Pow(2, -0.75) - 1, ToDouble(h.St(0)));
        h.PushDouble(1e-10);
        h.Ok(a => a.f2xm1());
        AssertClose(1e-10 * Math.Log(2) + Math.Pow(1e-10 * Math.Log(2), 2) / 2, ToDouble(h.St(0)));
        h.Unit.Reset();
        h.PushDouble(3.0);      // y
        h.PushDouble(10.0);     // x
        h.Ok(a => a.fyl2x());
        AssertClose(3 * Math.Log2(10), ToDouble(h.St(0)));
        Assert.Equal(7, h.Unit.Top);
        h.PushDouble(1e-12);
        h.Ok(a => a.fyl2xp1());
        AssertClose(3 * Math.Log2(10) * (1e-12 - 0.5e-24) / Math.Log(2), ToDouble(h.St(0)));
        h.Unit.Reset();
        h.PushDouble(-1.0);     // y
        h.PushDouble(-1.0);     // x
        h.Ok(a => a.fpatan());
        AssertClose(Math.Atan2(-1, -1), ToDouble(h.St(0)));
    }

    private static void AssertClose(double expected, double actual) =>
        Assert.True(Math.Abs(expected - actual) <= 2 * Math.Abs(Math.BitIncrement(Math.Abs(expected)) - Math.Abs(expected)),
            $"expected {expected:R}, got {actual:R}");

    [Fact]
    public void TranscendentalSpecialCases()
    {
        var h = new X87Harness();
        h.PushDouble(1e20);                                          // >= 2^63: out of range
        h.Ok(a => a.fsin());
        Assert.True(h.Flag(X87Status.C2));
        Assert.Equal(1e20, ToDouble(h.St(0)));
        h.Unit.Reset();
        h.Push(Float80.PositiveInfinity);
        h.Ok(a => a.fcos());
        Assert.Equal(Float80.Indefinite, h.St(0));
        Assert.True(h.Flag(X87Status.InvalidOperation));
        h.Unit.Reset();
        h.PushDouble(2.0);
        h.Ok(a => a.fldz());
        h.Ok(a => a.fyl2x());                                         // 2 * log2(0): ZE, -inf
        Assert.True(h.Flag(X87Status.ZeroDivide));
        Assert.Equal(Float80.NegativeInfinity, h.St(0));
        h.Unit.Reset();
        h.PushDouble(2.0);
        h.PushDouble(-1.0);
        h.Ok(a => a.fyl2x());                                         // log of negative: IE
        Assert.Equal(Float80.Indefinite, h.St(0));
        h.Unit.Reset();
        h.Push(Float80.NegativeInfinity);
        h.Ok(a => a.f2xm1());
        Assert.Equal(Float80.One.Negate(), h.St(0));
    }
}

public class X87NaNAndStackEdgeTests
{
    [Fact]
    public void MemorySignalingNaNOperandLosesToTheQuietNaNInTheStack()
    {
        var h = new X87Harness();
        var quiet = new Float80(0x7FFF, 0xC000_0000_0000_0001UL);    // small significand
        h.Push(quiet);
        BinaryPrimitives.WriteUInt64LittleEndian(h.Memory.Bytes, 0x7FF7_FFFF_FFFF_FFFFUL);   // SNaN, large significand
        h.Ok(a => a.fadd(__qword_ptr[eax]));
        Assert.Equal(quiet, h.St(0));                                 // SDM vol.1 table 4-7: the QNaN operand
        Assert.True(h.Flag(X87Status.InvalidOperation));
        // FLD of the same SNaN quiets it.
        h.Ok(a => a.fld(__qword_ptr[eax]));
        Assert.Equal(new Float80(0x7FFF, 0xFFFF_FFFF_FFFF_F800UL), h.St(0));
    }

    [Fact]
    public void MaskedStackUnderflowResponses()
    {
        var h = new X87Harness();
        h.Ok(a => a.fld1());
        h.Ok(a => a.fcom(st0, st3));                     // ST3 empty
        Assert.Equal("111", h.Codes);
        Assert.True(h.Flag(X87Status.StackFault));
        h.Ok(a => a.fnclex());
        h.Ok(a => a.fxch(st0, st2));                     // empty ST2 becomes the indefinite, then exchanged
        Assert.Equal(Float80.Indefinite, h.St(0));
        Assert.Equal(Float80.One, h.St(2));
        h.Ok(a => a.fninit());
        h.Ok(a => a.fld(st5));                           // FLD ST(i) of an empty register pushes the indefinite
        Assert.Equal(Float80.Indefinite, h.St(0));
        Assert.Equal(7, h.Unit.Top);
        h.Ok(a => a.fninit());
        h.Ok(a => a.fsqrt());
        Assert.Equal(Float80.Indefinite, h.St(0));
        Assert.True(h.Flag(X87Status.InvalidOperation) && h.Flag(X87Status.StackFault) && !h.Flag(X87Status.C1));
        h.Context.Eflags = 0x45;
        h.Ok(a => a.fninit());
        h.Ok(a => a.fucomip(st0, st1));
        Assert.Equal(0x45u, h.Context.Eflags);
        Assert.True(h.Flag(X87Status.StackFault));
    }

    [Fact]
    public void SixteenBitProtectedModeEnvironmentLayout()
    {
        var h = new X87Harness();
        h.Context.OperandSize32 = false;
        h.Context.Cs = 0x1B;
        h.Context.Eip = 0x12345;
        h.Context.DataSelector = 0x23;
        h.Context.DataOffset = 0x6789A;
        h.PushDouble(2.0);
        Assert.Equal(X87Outcome.Done, h.RunBytes("66D930"));   // fnstenv m14 [eax]
        byte[] m = h.Memory.Bytes;
        Assert.Equal(0x037F, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(0)));
        Assert.Equal(0x3800, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(2)));
        Assert.Equal(0x3FFF, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(4)));
        Assert.Equal(0x2345, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(6)));   // IP offset (low 16 bits)
        Assert.Equal(0x1B, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(8)));
        Assert.Equal(0x789A, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(10)));
        Assert.Equal(0x23, BinaryPrimitives.ReadUInt16LittleEndian(m.AsSpan(12)));
    }
}

public class ExtendedTrigonometryTests
{
    private static double ToDouble(Float80 v)
    {
        var env = new X87Arithmetic(X87Control.Default);
        return BitConverter.UInt64BitsToDouble(MemoryFormats.ToDoubleBits(v, ref env));
    }

    [Fact]
    public void SineOfTheExtendedPiIsTheTinyDifferenceToTruePi()
    {
        // FLDPI = C90FDAA22168C235 * 2^-62 exceeds pi by 5.0165576126683320...e-20, so sin is minus that.
        var h = new X87Harness();
        h.Ok(a => a.fldpi());
        h.Ok(a => a.fsincos());
        Assert.Equal(Float80.One.Negate(), h.St(0));                       // cos(pi) rounds to -1
        double sin = ToDouble(h.St(1));
        Assert.True(Math.Abs(sin - -5.016557612668332e-20) <= 1e-34, $"sin(pi) = {sin:R}");
        h.Ok(a => a.fldpi());
        h.Ok(a => a.fld1());
        h.Ok(a => a.fadd(st0, st0));
        h.Ok(a => a.fdivp(st1, st0));                                     // pi/2
        h.Ok(a => a.fsin());
        Assert.Equal(Float80.One, h.St(0));
    }

    [Fact]
    public void SineAndCosineAgreeWithTheHostToOneDoubleUlpAndWithEachOther()
    {
        var doubles = from negative in Gen.Elements(false, true)
                      from exponent in Gen.Choose(1023 - 40, 1023 + 62)
                      from hi in Gen.Choose(0, (1 << 26) - 1)
                      from lo in Gen.Choose(0, (1 << 26) - 1)
                      select BitConverter.Int64BitsToDouble((negative ? long.MinValue : 0) | ((long)exponent << 52) | ((long)hi << 26) | (uint)lo);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(5000 * ArithmeticPropertyTests.SoakFactor), Prop.ForAll(Arb.From(doubles), x =>
        {
            var h = new X87Harness();
            h.PushDouble(x);
            h.Ok(a => a.fsincos());
            double cos = ToDouble(h.St(0)), sin = ToDouble(h.St(1));
            bool close = WithinOneUlp(Math.Sin(x), sin) && WithinOneUlp(Math.Cos(x), cos);
            // sin^2 + cos^2 = 1 in extended precision (to about 2^-61).
            var env = new X87Arithmetic(X87Control.Default);
            Float80 s2 = ExtendedArithmetic.Multiply(h.St(1), h.St(1), ref env);
            Float80 c2 = ExtendedArithmetic.Multiply(h.St(0), h.St(0), ref env);
            Float80 error = ExtendedArithmetic.Subtract(ExtendedArithmetic.Add(s2, c2, ref env), Float80.One, ref env);
            return close && (error.IsZero || error.BiasedExponent < Float80.ExponentBias - 60);
        }));
    }

    private static bool WithinOneUlp(double expected, double actual) =>
        expected == actual || Math.BitIncrement(expected) == actual || Math.BitDecrement(expected) == actual;
}

public class ExtendedLogarithmTests
{
    /// <summary>|a - b| in units of the last place of b's 64-bit significand.</summary>
    private static double UlpDistance(Float80 a, Float80 b)
    {
        var env = new X87Arithmetic(X87Control.Default);
        Float80 difference = ExtendedArithmetic.Subtract(a, b, ref env).Abs();
        if (difference.IsZero)
        {
            return 0;
        }
        return Math.Pow(2, (difference.BiasedExponent - b.BiasedExponent) + 63) * (difference.Significand / Math.Pow(2, 63));
    }

    private static Float80 RunBinary(double y, Float80 x, Action<Iced.Intel.Assembler> op)
    {
        var h = new X87Harness();
        h.PushDouble(y);
        h.Push(x);
        h.Ok(op);
        Assert.Equal(7, h.Unit.Top);
        return h.St(0);
    }

    [Fact]
    public void Fyl2xIsExtendedPrecision()
    {
        // log2(10) against FLDL2T (the correctly rounded constant), log2(e) against FLDL2E.
        Float80 l2t = new(0x4000, 0xD49A_784B_CD1B_8AFEUL);
        Float80 l2e = new(0x3FFF, 0xB8AA_3B29_5C17_F0BCUL);
        Float80 e = new(0x4000, 0xADF8_5458_A2BB_4A9AUL);                 // e rounded to 64 bits
        Assert.True(UlpDistance(RunBinary(1, Float80.FromDouble(10), a => a.fyl2x()), l2t) <= 2);
        Assert.True(UlpDistance(RunBinary(1, e, a => a.fyl2x()), l2e) <= 3);
        // Powers of two are exact, with no PE.
        var h = new X87Harness();
        h.PushDouble(-3);
        h.PushDouble(1.0 / 1024);
        h.Ok(a => a.fyl2x());
        Assert.Equal(Float80.FromDouble(30), h.St(0));
        Assert.False(h.Flag(X87Status.Precision));
    }

    [Fact]
    public void F2xm1AndFyl2xp1AreExtendedPrecision()
    {
        // 2^0.5 - 1 + 1 = sqrt(2); 2^1 - 1 = 1; 2^-1 - 1 = -1/2.
        var env = new X87Arithmetic(X87Control.Default);
        Float80 sqrt2 = ExtendedArithmetic.SquareRoot(Float80.FromDouble(2), ref env);
        var h = new X87Harness();
        h.PushDouble(0.5);
        h.Ok(a => a.f2xm1());
        h.Ok(a => a.fld1());
        h.Ok(a => a.faddp(st1, st0));
        Assert.True(UlpDistance(h.St(0), sqrt2) <= 2);
        h.PushDouble(1);
        h.Ok(a => a.f2xm1());
        Assert.True(UlpDistance(h.St(0), Float80.One) <= 2);
        h.PushDouble(-1);
        h.Ok(a => a.f2xm1());
        Assert.True(UlpDistance(h.St(0), Float80.FromDouble(-0.5)) <= 2);
        // log2(1 + (sqrt(2) - 1)) = 1/2.
        Float80 x = ExtendedArithmetic.Subtract(sqrt2, Float80.One, ref env);
        Assert.True(UlpDistance(RunBinary(1, x, a => a.fyl2xp1()), Float80.FromDouble(0.5)) <= 3);
    }

    [Fact]
    public void LogAndExpAgreeWithTheHostToOneDoubleUlp()
    {
        var unit = from bits in Gen.Choose(0, int.MaxValue)
                   from sign in Gen.Elements(1.0, -1.0)
                   select sign * (bits / (double)int.MaxValue);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(3000 * ArithmeticPropertyTests.SoakFactor), Prop.ForAll(Arb.From(unit), v =>
        {
            if (v == 0)
            {
                return true;
            }
            var h = new X87Harness();
            h.PushDouble(v);
            h.Ok(a => a.f2xm1());
            double exp = h.PopDouble();
            h.PushDouble(1);
            h.PushDouble(Math.Abs(v) * 1000);
            h.Ok(a => a.fyl2x());
            double log = h.PopDouble();
            h.PushDouble(1);
            h.PushDouble(v * 0.29);
            h.Ok(a => a.fyl2xp1());
            double log1p = h.PopDouble();
            // The host references carry their own rounding: Pow(2, v) - 1 an absolute ~2^-52,
            // Log2 about an ulp; log1p is referenced through atanh to avoid cancellation.
            double w = v * 0.29;
            return Math.Abs(exp - (Math.Pow(2, v) - 1)) <= 5e-16
                && Math.Abs(log - Math.Log2(Math.Abs(v) * 1000)) <= 4.5e-16 * Math.Abs(log)
                && Math.Abs(log1p - 2 * Math.Atanh(w / (2 + w)) / Math.Log(2)) <= 1e-15 * Math.Abs(log1p);
        }));
    }
}

public class ExtendedArcTangentTests
{
    private static readonly Float80 Pi = new(0x4000, 0xC90F_DAA2_2168_C235UL);

    private static Float80 Fpatan(Float80 y, Float80 x)
    {
        var h = new X87Harness();
        h.Push(y);
        h.Push(x);
        h.Ok(a => a.fpatan());
        return h.St(0);
    }

    [Fact]
    public void SpecialOperandsGiveExtendedMultiplesOfPi()
    {
        Assert.Equal(Pi, Fpatan(Float80.PositiveZero, Float80.One.Negate()));
        Assert.Equal(Pi.Negate(), Fpatan(Float80.NegativeZero, Float80.NegativeZero));
        Assert.Equal(new Float80(0x3FFF, Pi.Significand), Fpatan(Float80.One, Float80.PositiveZero));
        Assert.Equal(new Float80(0xC000, 0x96CB_E3F9_990E_91A8UL), Fpatan(Float80.NegativeInfinity, Float80.NegativeInfinity));
        Assert.Equal(Float80.NegativeZero, Fpatan(Float80.NegativeZero, Float80.One));
        Float80 quarter = Fpatan(Float80.One, Float80.One);
        Assert.True(quarter.BiasedExponent == 0x3FFE && Math.Abs((long)(quarter.Significand - Pi.Significand)) <= 2, quarter.ToString());
        Float80 threeQuarters = Fpatan(Float80.One, Float80.One.Negate());
        Assert.True(threeQuarters.BiasedExponent == 0x4000 && Math.Abs((long)(threeQuarters.Significand - 0x96CB_E3F9_990E_91A8UL)) <= 2, threeQuarters.ToString());
    }

    [Fact]
    public void AgreesWithHostAtan2ToOneDoubleUlp()
    {
        var values = from negative in Gen.Elements(false, true)
                     from exponent in Gen.Choose(1023 - 30, 1023 + 30)
                     from hi in Gen.Choose(0, (1 << 26) - 1)
                     from lo in Gen.Choose(0, (1 << 26) - 1)
                     select BitConverter.Int64BitsToDouble((negative ? long.MinValue : 0) | ((long)exponent << 52) | ((long)hi << 26) | (uint)lo);
        var pairs = from y in values from x in values select (y, x);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(3000 * ArithmeticPropertyTests.SoakFactor), Prop.ForAll(Arb.From(pairs), t =>
        {
            var env = new X87Arithmetic(X87Control.Default);
            double actual = BitConverter.UInt64BitsToDouble(MemoryFormats.ToDoubleBits(Fpatan(Float80.FromDouble(t.y), Float80.FromDouble(t.x)), ref env));
            double expected = Math.Atan2(t.y, t.x);
            return actual == expected || Math.BitIncrement(expected) == actual || Math.BitDecrement(expected) == actual;
        }));
    }
}
