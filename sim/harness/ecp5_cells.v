// Behavioural models of the ECP5 cells that LiteDRAM's SDR PHY instantiates (sim/sdram_bench.py), for Icarus
// Verilog and Verilator. Yosys's own cells_sim.v needs SystemVerilog that Icarus does not parse. Only the
// ports and parameters that the generated core uses are modelled; GSR is not.

// A flip-flop with clock enable (SP) and asynchronous preset (PD): an output register of an I/O cell.
module OFS1P3BX (input D, input SP, input SCLK, input PD, output reg Q);
    initial Q = 1'b1;
    always @(posedge SCLK or posedge PD)
        if (PD) Q <= 1'b1;
        else if (SP) Q <= D;
endmodule

// The same as an input register.
module IFS1P3BX (input D, input SP, input SCLK, input PD, output Q);
    OFS1P3BX same (.D(D), .SP(SP), .SCLK(SCLK), .PD(PD), .Q(Q));
endmodule

// A flip-flop with asynchronous preset (the core's reset synchroniser).
module FD1S3BX (input D, input CK, input PD, output reg Q);
    initial Q = 1'b1;
    always @(posedge CK or posedge PD)
        if (PD) Q <= 1'b1;
        else Q <= D;
endmodule

// A pad: drives B with I while T is low; O is what is on B.
module TRELLIS_IO #(parameter DIR = "INPUT") (inout B, input I, input T, output O);
    generate
        if (DIR == "OUTPUT" || DIR == "BIDIR") begin : drive
            assign B = T ? 1'bz : I;
        end
    endgenerate
    assign O = B;
endmodule
