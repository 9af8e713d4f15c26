using SecureVmm.Tcb.Devices;
using Xunit;

namespace SecureVmm.Tests.Devices;

public sealed class PicTests
{
    /// <summary>The standard PC initialisation Linux and every BIOS do: vectors 0x20/0x28, cascade on IR2.</summary>
    internal static PicPair InitializedPair(bool autoEoi = false)
    {
        var pic = new PicPair();
        pic.Out(0x20, 0x11); // ICW1: edge, cascade, ICW4 needed
        pic.Out(0x21, 0x20); // ICW2: vectors 0x20-0x27
        pic.Out(0x21, 0x04); // ICW3: slave on IR2
        pic.Out(0x21, autoEoi ? 0x03 : 0x01); // ICW4: 8086 mode (+AEOI)
        pic.Out(0xA0, 0x11);
        pic.Out(0xA1, 0x28);
        pic.Out(0xA1, 0x02); // slave identity 2
        pic.Out(0xA1, autoEoi ? 0x03 : 0x01);
        return pic;
    }

    [Fact]
    public void Icw1_clears_the_mask_and_the_data_port_then_reads_the_mask()
    {
        var pic = InitializedPair();
        Assert.Equal(0x00, pic.In(0x21));
        pic.Out(0x21, 0xFB);
        Assert.Equal(0xFB, pic.In(0x21));
        pic.Out(0x20, 0x11); // re-initialisation clears IMR
        Assert.Equal(0x00, pic.In(0x21));
    }

    [Fact]
    public void Edge_request_is_delivered_with_its_vector_and_stays_in_service_until_eoi()
    {
        var pic = InitializedPair();
        Assert.False(pic.HasPending);
        pic.SetIrq(4, true);
        Assert.True(pic.HasPending);
        Assert.Equal(0x24, pic.Acknowledge());
        Assert.False(pic.HasPending);
        pic.Out(0x20, 0x0B); // OCW3: read ISR
        Assert.Equal(0x10, pic.In(0x20));
        pic.Out(0x20, 0x0A); // OCW3: read IRR
        Assert.Equal(0x00, pic.In(0x20));
        // A new edge while in service waits in IRR until the EOI.
        pic.SetIrq(4, false);
        pic.SetIrq(4, true);
        Assert.False(pic.HasPending);
        Assert.Equal(0x10, pic.In(0x20));
        pic.Out(0x20, 0x20); // non-specific EOI
        Assert.True(pic.HasPending);
        Assert.Equal(0x24, pic.Acknowledge());
    }

    [Fact]
    public void Edge_mode_ignores_a_held_level_but_level_mode_follows_it()
    {
        var pic = InitializedPair();
        pic.SetIrq(3, true);
        Assert.Equal(0x23, pic.Acknowledge());
        pic.Out(0x20, 0x20);
        pic.SetIrq(3, true); // still high: no new edge
        Assert.False(pic.HasPending);

        pic.Out(0x4D0, 0x08); // ELCR: IRQ3 level triggered
        Assert.Equal(0x08, pic.In(0x4D0));
        pic.SetIrq(3, true);
        Assert.Equal(0x23, pic.Acknowledge());
        pic.Out(0x20, 0x20);
        Assert.True(pic.HasPending); // level still asserted: requested again
        pic.SetIrq(3, false);
        Assert.False(pic.HasPending);
        pic.Out(0x4D0, 0xFF);
        Assert.Equal(0xF8, pic.In(0x4D0)); // IRQ 0-2 are always edge
    }

    [Fact]
    public void Masked_lines_are_held_in_irr_and_delivered_when_unmasked()
    {
        var pic = InitializedPair();
        pic.Out(0x21, 0x01);
        pic.SetIrq(0, true);
        Assert.False(pic.HasPending);
        Assert.Equal(0x01, pic.In(0x20) & 0x01); // IRR bit set
        pic.Out(0x21, 0x00);
        Assert.Equal(0x20, pic.Acknowledge());
    }

    [Fact]
    public void Priority_is_fully_nested_lower_numbers_first_and_higher_ones_preempt()
    {
        var pic = InitializedPair();
        pic.SetIrq(5, true);
        pic.SetIrq(3, true);
        Assert.Equal(0x23, pic.Acknowledge());
        Assert.False(pic.HasPending); // IR5 is lower priority than IR3 in service
        pic.SetIrq(1, true);
        Assert.True(pic.HasPending);  // IR1 preempts
        Assert.Equal(0x21, pic.Acknowledge());
        pic.Out(0x20, 0x20); // EOI clears IR1 (the highest in service)
        pic.Out(0x20, 0x0B);
        Assert.Equal(0x08, pic.In(0x20));
        pic.Out(0x20, 0x63); // specific EOI for IR3
        Assert.Equal(0x25, pic.Acknowledge());
    }

    [Fact]
    public void Slave_requests_cascade_through_ir2_and_need_eoi_on_both()
    {
        var pic = InitializedPair();
        pic.SetIrq(12, true);
        Assert.True(pic.HasPending);
        Assert.Equal(0x2C, pic.Acknowledge());
        pic.Out(0xA0, 0x0B);
        Assert.Equal(0x10, pic.In(0xA0)); // slave ISR bit 4
        pic.Out(0x20, 0x0B);
        Assert.Equal(0x04, pic.In(0x20)); // master ISR bit 2
        pic.SetIrq(12, false);
        pic.SetIrq(8, true); // higher priority on the slave, but the master's IR2 is in service
        Assert.False(pic.HasPending);
        pic.Out(0xA0, 0x20);
        pic.Out(0x20, 0x20);
        Assert.Equal(0x28, pic.Acknowledge());
    }

    [Fact]
    public void A_request_withdrawn_before_inta_gives_spurious_irq7_or_irq15_without_isr()
    {
        var pic = InitializedPair();
        pic.Out(0x4D0, 0x20); // IRQ5 level
        pic.SetIrq(5, true);
        Assert.True(pic.HasPending);
        pic.SetIrq(5, false);
        Assert.Equal(0x27, pic.Acknowledge());
        pic.Out(0x20, 0x0B);
        Assert.Equal(0x00, pic.In(0x20)); // spurious: ISR untouched

        pic.Out(0x4D1, 0x02); // IRQ9 level
        pic.SetIrq(9, true);
        Assert.True(pic.HasPending);
        pic.SetIrq(9, false); // withdrawn: the slave forgets it, but master IR2 (edge) stays latched
        Assert.True(pic.HasPending);
        Assert.Equal(0x2F, pic.Acknowledge());
        Assert.Equal(0x00, pic.Slave.InServiceRegister);
        Assert.Equal(0x04, pic.Master.InServiceRegister); // the master did see a request: it needs its EOI
    }

    [Fact]
    public void Auto_eoi_leaves_isr_clear()
    {
        var pic = InitializedPair(autoEoi: true);
        pic.SetIrq(1, true);
        Assert.Equal(0x21, pic.Acknowledge());
        pic.Out(0x20, 0x0B);
        Assert.Equal(0x00, pic.In(0x20));
        pic.SetIrq(1, false);
        pic.SetIrq(1, true);
        Assert.Equal(0x21, pic.Acknowledge());
    }

    [Fact]
    public void Rotation_and_set_priority_change_the_order()
    {
        var pic = InitializedPair();
        pic.Out(0x20, 0xC4); // set priority: IR4 lowest, so IR5 highest
        pic.SetIrq(1, true);
        pic.SetIrq(6, true);
        Assert.Equal(0x26, pic.Acknowledge());
        pic.Out(0x20, 0xA0); // rotate on non-specific EOI: IR6 becomes lowest
        Assert.Equal(0x21, pic.Acknowledge());
    }

    [Fact]
    public void Poll_command_acknowledges_and_returns_the_level()
    {
        var pic = InitializedPair();
        pic.SetIrq(6, true);
        pic.Out(0x20, 0x0C); // OCW3 poll
        Assert.Equal(0x86, pic.In(0x20));
        pic.Out(0x20, 0x0C);
        Assert.Equal(0x00, pic.In(0x20)); // nothing else pending
    }

    [Fact]
    public void Special_mask_mode_lets_lower_priorities_through()
    {
        var pic = InitializedPair();
        pic.SetIrq(2 + 1, true);
        Assert.Equal(0x23, pic.Acknowledge());
        pic.Out(0x21, 0x08);  // mask the in-service IR3
        pic.Out(0x20, 0x68);  // OCW3: set special mask mode
        pic.SetIrq(6, true);
        Assert.Equal(0x26, pic.Acknowledge());
    }
}
