// The SDRAM device model's store in Verilog simulators (sim/sdram_model.py, SdramModel(store="verilog")): the same
// synchronous memory as its Amaranth one (read before write, byte enables), declared without initial contents,
// which Amaranth would write out as one line per word (minutes of conversion for a model of the whole chip).
module sdram_model_store #(
    parameter ADDR_BITS = 12,
    parameter DATA_BITS = 16
) (
    input wire clk,
    input wire [ADDR_BITS-1:0] addr,
    input wire [DATA_BITS-1:0] wdata,
    input wire [DATA_BITS/8-1:0] wen,
    output reg [DATA_BITS-1:0] rdata
);
    reg [DATA_BITS-1:0] mem [0:(1 << ADDR_BITS) - 1];
    integer i;
    always @(posedge clk) begin
        rdata <= mem[addr];
        for (i = 0; i < DATA_BITS / 8; i = i + 1)
            if (wen[i]) mem[addr][8 * i +: 8] <= wdata[8 * i +: 8];
    end
endmodule
